"""Settings shared by every environment, read from the environment (see .env.example and README's configuration
table). ``local`` (manage.py's default), ``production`` (gunicorn's default) and ``test`` (pytest) build on it.

The defaults run everything on one machine with no server: an SQLite file under var/ and a Celery broker
kept in another SQLite file (kombu's SQLAlchemy transport), so `make demo` starts real worker and beat
processes. Production points DATABASE_URL at MySQL/MariaDB and CELERY_BROKER_URL at Redis.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[2]


class _Env(environ.Env):
    """django-environ's reader, whose lists drop the spaces around their items: it read "a.com, 127.0.0.1" as
    "a.com" and " 127.0.0.1", a host name no request's Host header matches (every request to it answered 400), and
    a trusted origin or a base URL that nothing equals."""

    def list(self, var, cast=None, default=environ.Env.NOTSET):
        items = super().list(var, cast=cast, default=default)
        items = [item.strip() if isinstance(item, str) else item for item in items]
        return [item for item in items if item != ""]

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        # A number that isn't one (CONN_MAX_AGE=60s) raised "invalid literal for int() with base 10: '60s'", which
        # names neither the variable nor what it takes.
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:
            kind = {int: "a whole number", float: "a number"}.get(cast, "a value of its kind")
            raise ImproperlyConfigured(f"{var} must be {kind} ({exc})") from None


env = _Env()
# A .env file beside manage.py is read when present; real environment variables win over it.
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"), overwrite=False)

VAR_DIR = Path(env("STATARB_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# https://docs.djangoproject.com/en/5.2/ref/settings/#debug
# Off unless set: a forgotten variable must never show tracebacks (and their locals) to the world.
DEBUG = env.bool("DEBUG", default=False)

# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    # First: of two apps with a management command of one name, Django runs the first app's, and core overrides the
    # state-changing commands of Django and django-axes with audited ones (core/command_audit.py).
    "core",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "csp",
    "drf_spectacular_sidecar",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "statarb_site",
    "pairs",
    "execution",
    "ladder",
    "monitoring",
    "replay",
    "risk",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: it answers a locked-out login attempt (django-axes).
    "axes.middleware.AxesMiddleware",
]

# https://django-axes.readthedocs.io/en/latest/2_installation.html: axes counts failed logins first.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "statarb_site.urls"
WSGI_APPLICATION = "statarb_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.stored_clock",
            ],
        },
    },
]


# --- Database -------------------------------------------------------------------------------------------------
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'statarb.sqlite3'}"


def _url_checked(name: str, value: str, schemes: tuple[str, ...], example: str) -> str:
    """``value`` of the variable ``name`` when it is a URL whose scheme (before any '+') is one of ``schemes``;
    ImproperlyConfigured naming the variable otherwise. Unchecked, an empty or mistyped DATABASE_URL ended in
    ``KeyError: 'ENGINE'`` and a mistyped broker URL became an AMQP host name the workers retried forever. The
    message quotes the scheme only: the rest of the URL may hold a password."""
    scheme, separator, _ = value.partition("://")
    if not value.strip():
        problem = "is set but empty (unset it for the default)"
    elif not separator or not scheme:
        problem = "is not a URL (no scheme://)"
    elif scheme.split("+", 1)[0].lower() not in schemes:
        problem = f"has the scheme {scheme!r}, which is none of {', '.join(schemes)}"
    else:
        return value
    raise ImproperlyConfigured(f"{name} {problem}: e.g. {example}")


_database_url = _url_checked("DATABASE_URL", env("DATABASE_URL", default=DEFAULT_DATABASE_URL),
                             ("mysql", "mysql2", "sqlite"),
                             "mysql://user:password@host:3306/name, or sqlite:////absolute/path.sqlite3")
DATABASES = {"default": env.db_url_config(_database_url)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3") and DATABASES["default"].get("HOST"):
    # sqlite://name.sqlite3 (two slashes) reads "name.sqlite3" as a host, which django-environ drops with a
    # warning and opens an in-memory database: migrations and imports would succeed and vanish with the process.
    raise ImproperlyConfigured("DATABASE_URL: an SQLite URL takes three slashes before a relative path and four "
                               "before an absolute one (sqlite:///var/statarb.sqlite3, sqlite:////srv/statarb.sqlite3)")
if DATABASES["default"]["ENGINE"].endswith("mysql") and not DATABASES["default"].get("NAME"):
    raise ImproperlyConfigured("DATABASE_URL names no database: mysql://user:password@host:3306/name")
DATABASE_ENGINE = DATABASES["default"]["ENGINE"]

if DATABASE_ENGINE.endswith("mysql"):
    # utf8mb4 for full Unicode; strict mode so MySQL rejects instead of truncating bad data; READ COMMITTED so
    # long readers (screening) don't hold gap locks against the bots; the session in UTC so DATETIME columns
    # and NOW() agree with Django's UTC values.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "charset": "utf8mb4",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES', time_zone='+00:00'",
            "isolation_level": "read committed",
        }
    )
    DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
elif DATABASE_ENGINE.endswith("sqlite3"):
    # WAL and IMMEDIATE transactions let the web, worker and beat processes share the file without
    # "database is locked" errors; the test database is a file too, so a real worker process can see it.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_statarb.sqlite3")}

# Lost connections (a MariaDB restart, a network blip) are detected before reuse instead of failing a task.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing one before collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The dashboard's JavaScript libraries, pinned in package.json and installed by ``npm ci`` (``make install``),
# served from our own static files (no CDN). Left out where npm has not run, so settings checks stay clean.
DASHBOARD_JS_LIBRARIES = {"vendor/chartjs": "node_modules/chart.js/dist", "vendor/htmx": "node_modules/htmx.org/dist"}
STATICFILES_DIRS += [(prefix, BASE_DIR / path) for prefix, path in DASHBOARD_JS_LIBRARIES.items()
                     if (BASE_DIR / path).is_dir()]


# --- Security (https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/) ---------------------------
# Off here (local HTTP); ``production`` turns them on by default.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Messages wait for the next page in the session (server side), not in a cookie: a message can carry a secret shown
# once (a new API token), and a cookie's value is only signed, not encrypted.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
# Behind our own reverse proxy, which sets X-Forwarded-Proto and appends the client's address to X-Forwarded-For.
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    # Only behind a proxy that sets this header itself; otherwise a client could claim HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


# --- Login rate limiting (https://django-axes.readthedocs.io/en/latest/4_configuration.html) ----------------
# After AXES_FAILURE_LIMIT wrong passwords a user name (from any address) and an address (for any user) are locked for
# AXES_COOLOFF_TIME hours, the right password included; every lock-out is logged and listed in the admin.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # either one over the limit locks
AXES_RESET_ON_SUCCESS = True
# The client's address, not the reverse proxy's (core.web.client_address): behind the proxy every attempt came from
# its address, and one stranger's wrong passwords locked everyone out.
AXES_CLIENT_IP_CALLABLE = "core.web.client_address"
# The log names the user name and address of a lock-out (the password is always masked): the operator must see who.
AXES_SENSITIVE_PARAMETERS: list[str] = []
# Its start-up line on every command is noise.
AXES_VERBOSE = False


# --- Content-Security-Policy (https://django-csp.readthedocs.io/en/latest/configuration.html) ----------------
# Everything comes from this site: no CDN, no inline script. Inline styles stay allowed for the admin's widgets;
# ReDoc runs its search in a worker made from a blob.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}


# --- REST API -------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Reading needs a role that may read (core.api); each write adds the permission of what it changes.
    "DEFAULT_PERMISSION_CLASSES": ["core.api.CanReadReports"],
    # Tokens are stored hashed and expire (django-rest-knox, through core.tokens): "Authorization: Token <token>".
    # The token first: an anonymous request is answered 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle",
                                 "rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env("API_THROTTLE_ANON", default="60/minute"),
                               "user": env("API_THROTTLE_USER", default="600/minute")},
    # An anonymous client is counted by the address the proxy appended (as core.web.client_address), else by
    # REMOTE_ADDR: DRF's default read the whole X-Forwarded-For, a header any client writes as it likes.
    "NUM_PROXIES": 1 if BEHIND_TLS_PROXY else 0,
    # An unknown query parameter answers 400 (core.api.StrictQueryParameters) instead of being ignored.
    "DEFAULT_FILTER_BACKENDS": ["core.api.StrictQueryParameters", "django_filters.rest_framework.DjangoFilterBackend",
                                "core.api.StableOrderingFilter"],
    # ?format=csv on every list, for Excel and Power BI.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "rest_framework.renderers.BrowsableAPIRenderer", "core.api.CsvRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "core.api.FormatAfterAuthNegotiation",
    "DEFAULT_PAGINATION_CLASS": "core.api.BoundedPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Decimals travel as strings so no reporting tool sees a binary float of a price.
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "statarb API",
    "DESCRIPTION": "Reporting API: pairs, levels, trades, orders, daily PnL and risk events; three audited writes "
                   "(close a trade, halt, resume), each with its own permission.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["core.api.CanReadReports"],
    # Swagger UI and ReDoc from our own static files (drf-spectacular-sidecar): the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets that share a field name get names of their own (orders and trades both have a side).
    "ENUM_NAME_OVERRIDES": {
        "OrderSideEnum": "execution.models.Order.Side",
        "TradeSideEnum": "execution.models.PairTrade.Side",
        "OrderStatusEnum": "execution.models.Order.Status",
        "PairStatusEnum": "pairs.models.Pair.Status",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.api.document_error_responses"],
}


# --- Celery (https://docs.celeryq.dev/en/stable/userguide/configuration.html) ------------------------------
DEFAULT_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
# The transports of kombu this project runs on (README: Redis; the embedded default: SQLAlchemy) and RabbitMQ's.
_BROKER_SCHEMES = ("redis", "rediss", "sqla", "sqlalchemy", "amqp", "amqps", "pyamqp")
_BROKER_EXAMPLE = "redis://host:6379/0"
if "CELERY_BROKER_URL" in env:
    CELERY_BROKER_URL = _url_checked("CELERY_BROKER_URL", env("CELERY_BROKER_URL"), _BROKER_SCHEMES, _BROKER_EXAMPLE)
elif "REDIS_URL" in env:
    CELERY_BROKER_URL = _url_checked("REDIS_URL", env("REDIS_URL"), ("redis", "rediss"), _BROKER_EXAMPLE)
else:
    CELERY_BROKER_URL = DEFAULT_BROKER_URL
BROKER_IS_REDIS = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
CELERY_RESULT_BACKEND = _url_checked(
    "CELERY_RESULT_BACKEND",
    env("CELERY_RESULT_BACKEND",
        default=CELERY_BROKER_URL if BROKER_IS_REDIS else f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"),
    ("redis", "rediss", "db", "rpc"), "redis://host:6379/1",  # empty, the chords of the screening's fan-out fail
)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# Every task has a ceiling; long ones (screening) raise their own limits on the task.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
# Acknowledge early by default: a task that places orders must not run twice because a worker died after
# sending them. Idempotent tasks opt into acks_late on the task itself.
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat writes a schedule's last run time when it sends it (not every 3 minutes): /health/'s beat check reads it.
CELERY_BEAT_SYNC_EVERY = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "pairs.tasks.*": {"queue": "selection"},
    "ladder.tasks.*": {"queue": "selection"},
    "execution.tasks.compute_signals*": {"queue": "signals"},
    "execution.tasks.dispatch_bots": {"queue": "signals"},
    # Bot ticks (execution.tasks.run_bot) are routed per account at call time: ExchangeAccount.queue_name.
    "monitoring.tasks.*": {"queue": "risk"},
    "risk.tasks.*": {"queue": "risk"},
    "notifications.tasks.*": {"queue": "notifications"},
    "statarb_site.pipelines.*": {"queue": "default"},
}
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600} if BROKER_IS_REDIS else {}
# Run tasks inline (tests and one-off scripts may opt in); the real worker path is the default.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True


# --- statarb --------------------------------------------------------------------------------------------------
# Fernet key that encrypts exchange credentials stored on accounts (credentials named by environment variable
# need no key). Generate with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
# Several keys, comma-separated, for a rotation: the first encrypts, every one decrypts (manage.py rotate_secrets
# re-encrypts every stored credential with the first).
STATARB_SECRETS_KEY = env("STATARB_SECRETS_KEY", default="")
# An account may name only environment variables with this prefix as its credentials: a name like SECRET_KEY or
# STATARB_SECRETS_KEY would send the server's own secrets to the exchange (or to whoever the base URL points at).
STATARB_CREDENTIAL_ENV_PREFIX = env("STATARB_CREDENTIAL_ENV_PREFIX", default="STATARB_CRED_")
# An account's REST base URL override must be one of these origins (Bybit's own domains).
STATARB_ALLOWED_BASE_URLS = env.list("STATARB_ALLOWED_BASE_URLS", default=[
    "https://api.bybit.com", "https://api.bytick.com", "https://api.bybit.nl", "https://api.bybit-tr.com",
    "https://api.bybit.kz", "https://api.bybitgeorgia.ge", "https://api.bybit.eu", "https://api.bybit.id",
    "https://api-demo.bybit.com", "https://api-testnet.bybit.com",
])
# Loopback base URLs (a local fake exchange) only for tests and development.
STATARB_ALLOW_LOOPBACK_BASE_URLS = env.bool("STATARB_ALLOW_LOOPBACK_BASE_URLS", default=DEBUG)
# The exchange (ccxt id) whose linear USDT perpetuals form the universe.
STATARB_EXCHANGE = env("STATARB_EXCHANGE", default="bybit")
# REST base URL for public market data instead of the exchange's default (a regional domain or a gateway).
STATARB_MARKET_DATA_URL = env("STATARB_MARKET_DATA_URL", default="")
STATARB_EXCHANGE_RATE_LIMIT = env.bool("STATARB_EXCHANGE_RATE_LIMIT", default=True)
STATARB_EXCHANGE_TIMEOUT_MS = env.int("STATARB_EXCHANGE_TIMEOUT_MS", default=10_000)
# Fan the screening out over the workers of the selection queue (a chord); on the embedded default one process
# screens the whole universe.
STATARB_SCREEN_FANOUT = env.bool("STATARB_SCREEN_FANOUT", default=BROKER_IS_REDIS)
# Pairs per fanned-out block: ~10,000 directions take ~0.3 s to screen (one core) and leave ~1.5 MB of results,
# kept in the result backend's Redis until the merge (pairs.services.fanout).
STATARB_SCREEN_BLOCK_PAIRS = env.int("STATARB_SCREEN_BLOCK_PAIRS", default=10_000)
# Forked processes that share an in-process screening run (the command, the embedded default; each gets its share of
# the BLAS threads); 0 = the process's share of the cores (core.threads.screen_processes: all of them for a command,
# one per process for a worker whose concurrency fills the cores). Fan-out workers screen their blocks in one
# process each.
STATARB_SCREEN_PROCESSES = env.int("STATARB_SCREEN_PROCESSES", default=0)
# BLAS threads of each numerical process (core.threads): 0 = the cores divided by the processes that share them
# (a worker's concurrency); more threads than cores spin against each other under load.
STATARB_BLAS_THREADS = env.int("STATARB_BLAS_THREADS", default=0)

# Seconds a bot tick may wait on its account's queue before the worker discards it: ticks come every minute (and after
# each signal run), so a tick older than this is stale; without it, a worker back from an outage ran every tick
# queued while it was away, one after the other.
STATARB_BOT_TICK_EXPIRES_S = env.int("STATARB_BOT_TICK_EXPIRES_S", default=120)

# Seconds since the scheduled guard cycle last checked an account (wall clock) after which its bot opens no new
# trade: with beat, the risk worker or every cycle down, nothing enforces the loss limits, so entries stop (exits
# and repairs go on) until the guard checks the account again. 0 turns the check off.
STATARB_GUARD_MAX_AGE_S = env.int("STATARB_GUARD_MAX_AGE_S", default=300)
if STATARB_GUARD_MAX_AGE_S < 0:
    raise ImproperlyConfigured(f"STATARB_GUARD_MAX_AGE_S must be 0 (off) or a number of seconds, got "
                               f"{STATARB_GUARD_MAX_AGE_S}")

# The clock the live processes run on (README, "Quick start"; core.market_clock): "wall" (the machine's clock; the
# default, and the only value production accepts) or "stored", THE DEMO'S SIMULATED CLOCK: `make demo` sets it for
# the served part only, so the paper accounts trade through the stored candles, one bar every
# STATARB_DEMO_BAR_SECONDS of wall time. Demo and real accounts refuse to trade on it.
STATARB_MARKET_CLOCK = env("STATARB_MARKET_CLOCK", default="wall")
if STATARB_MARKET_CLOCK not in ("wall", "stored"):
    raise ImproperlyConfigured(f"STATARB_MARKET_CLOCK must be 'wall' or 'stored', got {STATARB_MARKET_CLOCK!r}")
STATARB_DEMO_BAR_SECONDS = env.float("STATARB_DEMO_BAR_SECONDS", default=10.0)

# --- notifications (README, "Notifications and Telegram") ---------------------------------------------------------
# The bot token is a secret: core.secrets masks it in logs, errors and stored texts.
TELEGRAM_BOT_TOKEN = env("TELEGRAM_BOT_TOKEN", default="")
# Chats and the lowest severity each receives: "-1001234567890:info,424242:critical" (no suffix: info).
# TELEGRAM_CHAT_ID (one chat, every severity) is still read when TELEGRAM_CHAT_IDS is unset.
TELEGRAM_CHAT_ID = env("TELEGRAM_CHAT_ID", default="")
TELEGRAM_CHAT_IDS = env("TELEGRAM_CHAT_IDS", default="")
TELEGRAM_API_URL = env("TELEGRAM_API_URL", default=env("TELEGRAM_API_BASE_URL", default="https://api.telegram.org"))
# Telegram allows about one message a second per chat.
TELEGRAM_MIN_INTERVAL_S = env.float("TELEGRAM_MIN_INTERVAL_S", default=1.0)
# E-mail recipients (Django's EMAIL_* settings send): "ops@example.com:warning,desk@example.com:critical".
NOTIFY_EMAIL_TO = env("NOTIFY_EMAIL_TO", default="")
# The mail server those e-mails go through. A timeout always: one sender delivers every channel in turn, so a server
# that accepts and never answers would otherwise hold Telegram's alerts behind it for good.
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="statarb@localhost")
# The lowest severity written to the log channel (logger "statarb.notifications"), or "off".
NOTIFY_LOG_SEVERITY = env("NOTIFY_LOG_SEVERITY", default="info")
# A topic sent to a chat waits this long before its next message; what queued meanwhile goes out folded in one.
NOTIFY_FOLD_WINDOW_S = env.float("NOTIFY_FOLD_WINDOW_S", default=15.0)
# Enqueue a send after each notification's commit (beat's sweep every 30 s sends anyway).
NOTIFICATIONS_NUDGE = env.bool("NOTIFICATIONS_NUDGE", default=True)


# --- Logging --------------------------------------------------------------------------------------------------
# The error page (DEBUG) and error reports hide URL and connection-string settings too (they carry passwords).
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.logging.SecretsExceptionReporterFilter"
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "core.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (a console one with DEBUG, the admins' e-mail without) would write its records
        # unfiltered: none here, so they reach the root's filtered console; django.server (each request line,
        # whose URL may hold a key) gets the filtered console instead of its own.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        "ccxt": {"level": "WARNING"},
        # httpx logs every request's URL, and a Telegram URL holds the bot token (masked anyway, but not needed).
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Telegram console (monitoring/telegram; README, "Notifications and Telegram") -----------------------------------
# Chats whose commands are answered (default: the chats of TELEGRAM_CHAT_IDS); any other chat gets nothing.
TELEGRAM_COMMAND_CHAT_IDS = env("TELEGRAM_COMMAND_CHAT_IDS", default="")
# Telegram user id -> Django user name, for /halt, /flatten and /resume: "424242:alice,777:bob".
TELEGRAM_USERS = env("TELEGRAM_USERS", default="")
