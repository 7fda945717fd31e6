"""Settings read from the environment, checked in fresh interpreters so each case gets its own environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STRONG_SECRET_KEY = "Vq3$kP9!zL2@wR7#xT5%nB8^mC4&hJ6*dF1(gS0)yU2-eA9_iO3+pQ7=rW5~tZ8"

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in %r}, default=str))
"""


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = os.environ.copy()
    for name in (
        "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL", "DEBUG", "SECRET_KEY",
        "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "STATIC_ROOT",
        "BEHIND_TLS_PROXY", "CONN_MAX_AGE",
    ):
        env.pop(name, None)
    env["DJANGO_SETTINGS_MODULE"] = "statarb_site.settings.local"
    env["STATARB_VAR_DIR"] = str(tmp_path / "var")
    env.update(values)
    return env


def _shared_servers(tmp_path: Path) -> dict[str, str]:
    """What production requires besides the key and hosts (files here: nothing needs to answer)."""
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}",
            "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"}


def _production(tmp_path: Path, **values: str) -> dict[str, str]:
    return _env(tmp_path, DJANGO_SETTINGS_MODULE="statarb_site.settings.production",
                **{**_shared_servers(tmp_path), **values})


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _settings(tmp_path: Path, names: list[str], **values: str) -> dict:
    result = _run(["-c", PRINT_SETTINGS % (names,)], _env(tmp_path, **values))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mysql_database_options(tmp_path):
    databases = _settings(tmp_path, ["DATABASES"], DATABASE_URL="mysql://u:p@127.0.0.1:3306/x")["DATABASES"]
    default = databases["default"]
    assert default["ENGINE"] == "django.db.backends.mysql"
    assert (default["NAME"], default["USER"], default["PASSWORD"], default["HOST"], default["PORT"]) == (
        "x", "u", "p", "127.0.0.1", 3306,
    )
    options = default["OPTIONS"]
    assert options["charset"] == "utf8mb4"
    assert "STRICT_TRANS_TABLES" in options["init_command"]
    assert "time_zone='+00:00'" in options["init_command"]
    assert options["isolation_level"] == "read committed"
    assert default["TEST"]["CHARSET"] == "utf8mb4"
    assert default["CONN_HEALTH_CHECKS"] is True


def test_sqlite_default_lives_in_the_var_dir(tmp_path):
    values = _settings(tmp_path, ["DATABASES", "DEBUG", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
    default = values["DATABASES"]["default"]
    assert default["ENGINE"] == "django.db.backends.sqlite3"
    assert default["NAME"] == str(tmp_path / "var" / "statarb.sqlite3")
    assert default["TEST"]["NAME"] == str(tmp_path / "var" / "test_statarb.sqlite3")
    assert default["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert values["DEBUG"] is False  # off unless DEBUG is set
    # Without CELERY_BROKER_URL nor REDIS_URL: the SQLAlchemy transport on a file in the var dir.
    assert values["CELERY_BROKER_URL"] == f"sqla+sqlite:///{tmp_path / 'var' / 'celery-broker.sqlite3'}"
    assert values["CELERY_RESULT_BACKEND"] == f"db+sqlite:///{tmp_path / 'var' / 'celery-results.sqlite3'}"


def test_broker_falls_back_to_redis_url(tmp_path):
    values = _settings(
        tmp_path, ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"], REDIS_URL="redis://cache.internal:6379/3"
    )
    assert values == {
        "CELERY_BROKER_URL": "redis://cache.internal:6379/3",
        "CELERY_RESULT_BACKEND": "redis://cache.internal:6379/3",
    }


def test_explicit_broker_url_wins_over_redis_url(tmp_path):
    values = _settings(
        tmp_path,
        ["CELERY_BROKER_URL"],
        CELERY_BROKER_URL="redis://broker.internal:6379/0",
        REDIS_URL="redis://cache.internal:6379/3",
    )
    assert values["CELERY_BROKER_URL"] == "redis://broker.internal:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # Each ended in "KeyError: 'ENGINE'" naming no variable.
        ("DATABASE_URL", "", "DATABASE_URL is set but empty (unset it for the default)"),
        ("DATABASE_URL", "mysql//statarb:db-Pw-123@db-host/statarb", "DATABASE_URL is not a URL (no scheme://)"),
        # Was "Error loading psycopg2 or psycopg module": the candle writes exist for MySQL and SQLite only.
        ("DATABASE_URL", "postgres://statarb:db-Pw-123@db-host/statarb",
         "DATABASE_URL has the scheme 'postgres', which is none of mysql, mysql2, sqlite"),
        # Was taken: an in-memory database whose migrations and imports vanished with the process.
        ("DATABASE_URL", "sqlite://statarb.sqlite3", "DATABASE_URL: an SQLite URL takes three slashes"),
        ("DATABASE_URL", "mysql://statarb:db-Pw-123@db-host:3306/", "DATABASE_URL names no database"),
        # Each was taken as an AMQP broker (on localhost, or on a host called "redis//127.0.0.1:6379/0"): the workers
        # connected to another broker than the one meant, or retried a name that doesn't resolve, forever.
        ("CELERY_BROKER_URL", "", "CELERY_BROKER_URL is set but empty (unset it for the default)"),
        ("CELERY_BROKER_URL", "redis//:db-Pw-123@127.0.0.1:6379/0", "CELERY_BROKER_URL is not a URL (no scheme://)"),
        ("CELERY_BROKER_URL", "reddis://:db-Pw-123@127.0.0.1:6379/0",
         "CELERY_BROKER_URL has the scheme 'reddis', which is none of redis, rediss,"),
        ("REDIS_URL", "127.0.0.1:6379", "REDIS_URL is not a URL (no scheme://)"),
        ("REDIS_URL", "amqp://guest:db-Pw-123@h//", "REDIS_URL has the scheme 'amqp', which is none of redis, rediss"),
        # An empty one turned the results off (the screening's fan-out chord then fails); a typo was a module name.
        ("CELERY_RESULT_BACKEND", "", "CELERY_RESULT_BACKEND is set but empty (unset it for the default)"),
        ("CELERY_RESULT_BACKEND", "redis:/:db-Pw-123@h:6379/1", "CELERY_RESULT_BACKEND is not a URL (no scheme://)"),
        # "invalid literal for int() with base 10: '60s'", naming neither the variable nor what it takes.
        ("CONN_MAX_AGE", "60s", "CONN_MAX_AGE must be a whole number (invalid literal for int() with base 10: '60s')"),
        ("NOTIFY_FOLD_WINDOW_S", "fifteen", "NOTIFY_FOLD_WINDOW_S must be a number ("),
    ],
)  # fmt: skip
def test_a_malformed_url_or_number_stops_the_start_naming_the_variable(tmp_path, name, value, message):
    result = _run(["manage.py", "check"], _env(tmp_path, **{name: value}))

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr
    assert "db-Pw-123" not in result.stderr  # the URL's password is not quoted


def test_the_database_and_broker_urls_of_the_readme_are_taken(tmp_path):
    values = _settings(tmp_path, ["DATABASES", "CELERY_BROKER_URL"],
                       DATABASE_URL="sqlite:///var/statarb.sqlite3", CELERY_BROKER_URL="rediss://h:6380/0")
    assert values["DATABASES"]["default"]["NAME"] == "var/statarb.sqlite3"
    assert values["CELERY_BROKER_URL"] == "rediss://h:6380/0"


def test_debug_is_on_only_when_set(tmp_path):
    assert _settings(tmp_path, ["DEBUG"], DEBUG="1")["DEBUG"] is True
    assert _settings(tmp_path, ["DEBUG"])["DEBUG"] is False


def test_production_without_secret_key_fails_naming_it(tmp_path):
    result = _run(["-c", "import django; django.setup()"], _production(tmp_path, ALLOWED_HOSTS="statarb.example.com"))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("key", ["change-me-to-50-or-more-random-characters", "short-but-random-Xk29",
                                 "django-insecure-local-development-only-never-use-in-production"])
def test_production_refuses_a_placeholder_or_short_secret_key(tmp_path, key):
    result = _run(["-c", "import django; django.setup()"],
                  _production(tmp_path, SECRET_KEY=key, ALLOWED_HOSTS="statarb.example.com"))
    assert result.returncode != 0
    assert "SECRET_KEY in production must be 50 or more random characters" in result.stderr


def test_production_without_allowed_hosts_fails_naming_it(tmp_path):
    result = _run(["-c", "import django; django.setup()"], _production(tmp_path, SECRET_KEY=STRONG_SECRET_KEY))
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set" in result.stderr


@pytest.mark.parametrize("missing", ["DATABASE_URL", "CELERY_BROKER_URL"])
def test_production_without_the_shared_database_or_broker_fails_naming_it(tmp_path, missing):
    """Defaulted, a worker whose unit file lacked DATABASE_URL traded on a SQLite database of its own."""
    env = _production(tmp_path, SECRET_KEY=STRONG_SECRET_KEY, ALLOWED_HOSTS="statarb.example.com")
    del env[missing]
    result = _run(["-c", "import django; django.setup()"], env)
    assert result.returncode != 0
    assert f"{missing} " in result.stderr and "must be set in the environment in production" in result.stderr
    with_redis_url = _run(["-c", "import django; django.setup()"], {**env, "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert (with_redis_url.returncode == 0) is (missing == "CELERY_BROKER_URL"), with_redis_url.stderr


HOST_PROBE = """
import django
django.setup()
from django.test import Client
client = Client()
for host in ("statarb.example.com", "127.0.0.1", "evil.example.com"):
    print(host, client.get("/no-such-page/", HTTP_HOST=host, secure=True).status_code)
"""


def test_comma_separated_lists_take_spaces_after_the_commas(tmp_path):
    # "statarb.example.com, 127.0.0.1" was read as "statarb.example.com" and " 127.0.0.1": every request to
    # 127.0.0.1 was answered 400 (and a trusted origin after a space never matched: CSRF failures at login).
    env = _production(tmp_path, SECRET_KEY=STRONG_SECRET_KEY, ALLOWED_HOSTS="statarb.example.com, 127.0.0.1",
                      CSRF_TRUSTED_ORIGINS="https://statarb.example.com, https://127.0.0.1 ,")
    result = _run(["-c", HOST_PROBE], env)
    assert result.returncode == 0, result.stderr
    codes = dict(line.split() for line in result.stdout.splitlines() if line.count(" ") == 1)
    assert codes["statarb.example.com"] == codes["127.0.0.1"] != "400"
    assert codes["evil.example.com"] == "400"
    values = _settings(tmp_path, ["ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"], **{
        k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
                            "DATABASE_URL", "CELERY_BROKER_URL")})
    assert values == {"ALLOWED_HOSTS": ["statarb.example.com", "127.0.0.1"],
                      "CSRF_TRUSTED_ORIGINS": ["https://statarb.example.com", "https://127.0.0.1"]}


def test_the_market_clock_is_the_wall_clock_unless_set_and_production_refuses_the_stored_one(tmp_path):
    assert _settings(tmp_path, ["STATARB_MARKET_CLOCK"])["STATARB_MARKET_CLOCK"] == "wall"
    assert _settings(tmp_path, ["STATARB_MARKET_CLOCK"], STATARB_MARKET_CLOCK="stored")["STATARB_MARKET_CLOCK"] == \
        "stored"
    result = _run(["-c", "import django; django.setup()"], _env(tmp_path, STATARB_MARKET_CLOCK="replayed"))
    assert result.returncode != 0 and "STATARB_MARKET_CLOCK must be 'wall' or 'stored'" in result.stderr
    result = _run(["-c", "import django; django.setup()"],
                  _production(tmp_path, SECRET_KEY=STRONG_SECRET_KEY, ALLOWED_HOSTS="statarb.example.com",
                              STATARB_MARKET_CLOCK="stored"))
    assert result.returncode != 0 and "STATARB_MARKET_CLOCK must be 'wall' in production" in result.stderr


def test_production_keeps_debug_off_whatever_the_environment_says(tmp_path):
    values = _settings(tmp_path, ["DEBUG", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE"],
                       DJANGO_SETTINGS_MODULE="statarb_site.settings.production", DEBUG="1",
                       SECRET_KEY=STRONG_SECRET_KEY, ALLOWED_HOSTS="statarb.example.com", **_shared_servers(tmp_path))
    assert values == {"DEBUG": False, "SECURE_SSL_REDIRECT": True, "SESSION_COOKIE_SECURE": True}


def test_production_refuses_flush_and_local_settings_keep_it(tmp_path):
    # manage.py flush empties the audit trail and every trade (core/management/commands/flush.py refuses it then).
    production = _settings(tmp_path, ["STATARB_REFUSE_FLUSH"],
                           DJANGO_SETTINGS_MODULE="statarb_site.settings.production", SECRET_KEY=STRONG_SECRET_KEY,
                           ALLOWED_HOSTS="statarb.example.com", **_shared_servers(tmp_path))
    assert production == {"STATARB_REFUSE_FLUSH": True}
    result = _run(["-c", "import django; django.setup(); from django.conf import settings; "
                         "print(getattr(settings, 'STATARB_REFUSE_FLUSH', False))"], _env(tmp_path))
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_production_settings_pass_the_deploy_check(tmp_path):
    env = _production(tmp_path, SECRET_KEY=STRONG_SECRET_KEY, ALLOWED_HOSTS="statarb.example.com")
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_local_debug_settings_fail_the_deploy_check(tmp_path):
    # The same check must be able to fail: DEBUG on and the insecure development key are deploy warnings.
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], _env(tmp_path, DEBUG="1"))
    assert result.returncode != 0
    assert "security.W018" in result.stderr + result.stdout  # DEBUG is True


def test_models_and_migrations_agree(tmp_path):
    result = _run(["manage.py", "makemigrations", "--check", "--dry-run"], _env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout



def test_the_web_server_without_a_settings_module_runs_production_and_celery_local(tmp_path):
    """gunicorn statarb_site.wsgi as the README runs it: the package (with its Celery app) is imported first and
    chooses local for a Celery process; the WSGI entry point must still end up on production."""
    env = _env(tmp_path, SECRET_KEY=STRONG_SECRET_KEY, ALLOWED_HOSTS="statarb.example.com", **_shared_servers(tmp_path))
    del env["DJANGO_SETTINGS_MODULE"]
    probe = ("import {module}\nfrom django.conf import settings\n"
             "print(settings.SETTINGS_MODULE, settings.SECURE_SSL_REDIRECT, settings.DEBUG)")
    web = _run(["-c", probe.format(module="statarb_site.wsgi")], env)
    assert web.returncode == 0, web.stderr
    assert web.stdout.split()[-3:] == ["statarb_site.settings.production", "True", "False"]
    worker = _run(["-c", probe.format(module="statarb_site.celery")], env)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.split()[-3] == "statarb_site.settings.local"
    named = _run(["-c", probe.format(module="statarb_site.wsgi")], {**env, "DJANGO_SETTINGS_MODULE":
                                                                      "statarb_site.settings.local"})
    assert named.stdout.split()[-3] == "statarb_site.settings.local"  # a module the environment names is kept
