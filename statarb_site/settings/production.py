"""Production: DEBUG off whatever the environment says, the secret key and host names required, HTTPS on."""

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

# The demo's simulated clock never runs in production (core.market_clock).
if env("STATARB_MARKET_CLOCK", default="wall") != "wall":
    raise ImproperlyConfigured("STATARB_MARKET_CLOCK must be 'wall' in production (the stored clock is the demo's).")

# No account may point at a loopback address in production.
STATARB_ALLOW_LOOPBACK_BASE_URLS = False

# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
