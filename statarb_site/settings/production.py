"""Production: DEBUG off whatever the environment says, the secret key, host names, database and broker required,
HTTPS on."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

# https://docs.djangoproject.com/en/5.2/ref/settings/#debug
DEBUG = False

# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key (no default: a missing key stops the start)
try:
    SECRET_KEY = env("SECRET_KEY")
except ImproperlyConfigured as exc:
    raise ImproperlyConfigured("SECRET_KEY must be set in the environment in production.") from exc
# The example file's placeholder, the local settings' key or a short one would sign the sessions and the password
# resets of a system that trades money: refused at start (manage.py check --deploy only warns, and nobody runs it
# in a unit file).
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure") or "change-me" in SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY in production must be 50 or more random characters, not a placeholder: e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(64))'")

# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in the environment in production (comma-separated).")

# The shared database and broker are named, never defaulted: a process whose unit file lacks them ran on a SQLite
# database and broker of its own under var/, its bots trading beside the guard's database, unseen by the dashboard.
if not env("DATABASE_URL", default=""):
    raise ImproperlyConfigured("DATABASE_URL must be set in the environment in production (the shared database, e.g. "
                               "mysql://statarb:password@db-host:3306/statarb): without it this process would run "
                               "on a SQLite database of its own")
if not env("CELERY_BROKER_URL", default="") and not env("REDIS_URL", default=""):
    raise ImproperlyConfigured("CELERY_BROKER_URL (or REDIS_URL) must be set in the environment in production (the "
                               "shared broker, e.g. redis://redis-host:6379/0): without it this process would use a "
                               "broker of its own, and its tasks would never reach the workers")

# The demo's simulated clock never runs in production (core.market_clock).
if env("STATARB_MARKET_CLOCK", default="wall") != "wall":
    raise ImproperlyConfigured("STATARB_MARKET_CLOCK must be 'wall' in production (the stored clock is the demo's).")

# No account may point at a loopback address in production.
STATARB_ALLOW_LOOPBACK_BASE_URLS = False
# manage.py flush would empty the audit trail and every trade: refused (core/management/commands/flush.py).
STATARB_REFUSE_FLUSH = True

# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
