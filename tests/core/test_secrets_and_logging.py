"""Encryption of stored credentials and the logging filter that keeps secrets out of log lines."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from core.logging import RedactSecretsFilter
from core.secrets import SecretsKeyMissing, decrypt_secret, encrypt_secret, redact, register_secret

# --- encryption -----------------------------------------------------------------------------------------------


def test_encrypt_decrypt_roundtrip(secrets_key):
    plain = "bybit-secret-Ab12Cd34Ef56"
    token = encrypt_secret(plain)
    assert token != plain
    assert plain not in token
    assert decrypt_secret(token) == plain
    # Fernet tokens are salted: the same value encrypts differently each time, both decrypt.
    other = encrypt_secret(plain)
    assert other != token
    assert decrypt_secret(other) == plain


def test_unicode_roundtrip(secrets_key):
    assert decrypt_secret(encrypt_secret("clé-secrète-✓")) == "clé-secrète-✓"


def test_missing_key_gives_a_clear_error(settings):
    settings.STATARB_SECRETS_KEY = ""
    with pytest.raises(SecretsKeyMissing, match="STATARB_SECRETS_KEY is not set") as excinfo:
        encrypt_secret("some-value-123")
    assert isinstance(excinfo.value, ImproperlyConfigured)
    with pytest.raises(SecretsKeyMissing, match="STATARB_SECRETS_KEY is not set"):
        decrypt_secret("gAAAAA-whatever")


@pytest.mark.parametrize("bad_key", ["not-a-fernet-key", "c2hvcnQ=", "x" * 44])
def test_invalid_key_gives_a_clear_error(settings, bad_key):
    settings.STATARB_SECRETS_KEY = bad_key
    with pytest.raises(SecretsKeyMissing, match="not a valid Fernet key"):
        encrypt_secret("some-value-123")


def test_token_from_another_key_gives_a_clear_error(settings):
    settings.STATARB_SECRETS_KEY = Fernet.generate_key().decode()
    token = encrypt_secret("value-from-old-key")
    settings.STATARB_SECRETS_KEY = Fernet.generate_key().decode()
    with pytest.raises(SecretsKeyMissing, match="could not be decrypted"):
        decrypt_secret(token)


def test_redact_masks_longest_first():
    assert redact("a=abcdef123456 b=abcdef", frozenset({"abcdef", "abcdef123456"})) == "a=*** b=***"
    assert redact("nothing here", frozenset({"abcdef"})) == "nothing here"


# --- the logging filter ---------------------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def captured():
    handler = _Capture()
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("tests.statarb_site.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


def test_registered_secret_is_masked_in_message_and_args(captured):
    logger, handler = captured
    secret = "registered-Secret-9x8y7z"
    register_secret(secret)

    logger.info("connecting with %s", secret)
    logger.warning(f"inline {secret} in the message")

    assert handler.lines == [
        "INFO tests.statarb_site.redaction: connecting with ***",
        "WARNING tests.statarb_site.redaction: inline *** in the message",
    ]


def test_short_values_are_not_registered(captured):
    logger, handler = captured
    register_secret("ab1")
    logger.info("value ab1 stays")
    assert handler.lines == ["INFO tests.statarb_site.redaction: value ab1 stays"]


def test_configured_secrets_key_is_masked(captured, secrets_key):
    logger, handler = captured
    logger.error("bad key %s", secrets_key)
    assert secrets_key not in handler.text
    assert handler.text.endswith("bad key ***")


def test_telegram_token_shape_is_masked(captured):
    logger, handler = captured
    token = "123456789:AAHk9xYz-abcdefghijklmnopqrstuvwxyz_12"
    logger.info("POST https://api.telegram.org/bot%s/sendMessage failed", token)
    logger.info("configured token %s", token)
    assert token not in handler.text
    assert "AAHk9xYz" not in handler.text
    assert handler.lines == [
        "INFO tests.statarb_site.redaction: POST https://api.telegram.org/bot***/sendMessage failed",
        "INFO tests.statarb_site.redaction: configured token ***",
    ]


def test_api_key_and_signature_parameters_are_masked(captured):
    logger, handler = captured
    logger.debug("GET /v5/order/realtime?api_key=AbCdEf123456&timestamp=1700000000&sign=0f1e2d3c4b5a")
    logger.debug('headers {"X-BAPI-API-KEY": "KeyValue987", "X-BAPI-SIGN": "SigValue654"}')
    logger.debug("login password=hunter2hunter2 token: tok_abcdef")

    text = handler.text
    for value in ("AbCdEf123456", "0f1e2d3c4b5a", "KeyValue987", "SigValue654", "hunter2hunter2", "tok_abcdef"):
        assert value not in text
    assert "api_key=***&timestamp=1700000000&sign=***" in text
    assert "password=***" in text


def test_bybits_echo_of_a_refused_requests_credentials_is_masked(captured):
    logger, handler = captured
    logger.warning('{"retCode":10001,"retMsg":"empty value: apiTimestamp[1700000000000] apiKey[KeyValue987] '
                   'apiSignature[5f0e9d8c7b6a5f0e9d8c7b6a]: openapi sign params error!"}')
    logger.warning('{"retCode":10004,"retMsg":"error sign! origin_string[1700000000000KeyValue9875000category=x]"}')

    text = handler.text
    assert "KeyValue987" not in text and "5f0e9d8c7b6a5f0e9d8c7b6a" not in text
    assert "apiTimestamp[1700000000000] apiKey[***] apiSignature[***]: openapi sign params error!" in text
    assert "error sign! origin_string[***]" in text


def test_secret_inside_an_exception_traceback_is_masked(captured):
    logger, handler = captured
    secret = "traceback-Secret-5q4w3e"
    register_secret(secret)
    telegram = "987654321:ZZtopSecretTokenValue_abcdefghijklmn"

    def call_exchange():
        raise RuntimeError(f"auth failed for key {secret} via bot{telegram}")

    try:
        call_exchange()
    except RuntimeError:
        logger.exception("exchange call failed for %s", "bybit")

    text = handler.text
    assert text.startswith("ERROR tests.statarb_site.redaction: exchange call failed for bybit\nTraceback")
    assert "RuntimeError: auth failed for key *** via bot***" in text
    assert "call_exchange" in text  # the traceback itself is kept
    assert secret not in text
    assert telegram not in text


def test_a_second_handler_does_not_print_the_traceback_twice(captured):
    logger, handler = captured
    second = _Capture()
    logger.addHandler(second)
    secret = "second-handler-Secret-1a2b"
    register_secret(secret)
    try:
        try:
            raise ValueError(secret)
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(second)
    assert secret not in handler.text
    # The record was cleaned by the first handler's filter before the second one formatted it.
    assert secret not in second.text
    assert handler.text.count("Traceback") == 1


def test_passwords_of_the_database_broker_and_mail_settings_are_masked(captured, settings, monkeypatch):
    logger, handler = captured
    settings.CELERY_BROKER_URL = "redis://:broker-Pw-123@redis-host:6379/0"
    settings.CELERY_RESULT_BACKEND = "redis://:backend-Pw-456@redis-host:6379/1"
    settings.EMAIL_HOST_PASSWORD = "smtp-Pw-789"
    monkeypatch.setitem(settings.DATABASES["default"], "PASSWORD", "db-Pw-012")  # read again only to connect
    logger.error("lost broker-Pw-123, backend-Pw-456, smtp-Pw-789 and db-Pw-012")
    assert handler.lines == ["ERROR tests.statarb_site.redaction: lost ***, ***, *** and ***"]


def test_an_unknown_password_in_a_url_is_masked(captured):
    logger, handler = captured
    logger.error("cannot reach mysql://statarb:Unknown-Pw@db-host:3306/statarb or redis://:Other-Pw@r:6379/0")
    assert "Unknown-Pw" not in handler.text and "Other-Pw" not in handler.text
    assert "mysql://statarb:***@db-host:3306/statarb" in handler.text and "redis://:***@r:6379/0" in handler.text


_DJANGO_LOGGERS_SCRIPT = """
import logging, django
django.setup()
logging.getLogger("django.request").error("Internal Server Error: /bot%s/sendMessage", "123456789:" + "A" * 35)
logging.getLogger("django.server").info('"GET /api/v1/pnl/?api_key=%s HTTP/1.1" 200', "plainKEYvalue123")
logging.getLogger("django.security").warning("token %s", __import__("os").environ["TELEGRAM_BOT_TOKEN"])
"""


def test_djangos_own_loggers_write_only_through_the_filtered_console(tmp_path):
    """In a process of its own (pytest replaces the logging handlers), with DEBUG on as in `make demo`: Django's
    default handlers would print these unfiltered, once more beside the root's filtered console."""
    import os
    import subprocess
    import sys

    token = "987654321:" + "B" * 35
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "statarb_site.settings.local", "DEBUG": "1",
           "STATARB_VAR_DIR": str(tmp_path), "TELEGRAM_BOT_TOKEN": token}
    run = subprocess.run([sys.executable, "-c", _DJANGO_LOGGERS_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    lines = [line for line in run.stderr.splitlines() if "django." in line]
    assert len(lines) == 3, run.stderr  # each once: no second, unfiltered handler
    assert "A" * 35 not in run.stderr and "plainKEYvalue123" not in run.stderr and token not in run.stderr


def _error_page(rf, request=None) -> str:
    """Django's error page for a request whose environment holds a database URL (as runserver's does)."""
    from django.views.debug import ExceptionReporter

    request = request or rf.get("/boom", DATABASE_URL="mysql://statarb:" + "db-Pw" + "-456@db-host/statarb")
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        return ExceptionReporter(request, type(exc), exc, exc.__traceback__).get_traceback_html()


def test_the_error_page_hides_url_settings_and_environment(rf, settings):
    settings.DEBUG = True
    settings.CELERY_BROKER_URL = "redis://:" + "broker-Pw" + "-123@redis-host:6379/0"
    page = _error_page(rf)
    # Built, not written out: the page shows the source lines around the error, which are not what is checked.
    assert "broker-Pw" + "-123" not in page and "db-Pw" + "-456" not in page
    assert "CELERY_BROKER_URL" in page and "DATABASE_URL" in page  # named, with the value hidden


def test_the_error_page_hides_the_api_token_of_the_request(rf, settings):
    # Our filter's list of names replaced Django's and left out its AUTH: the Authorization header, an API token,
    # was shown whole among the request's variables.
    settings.DEBUG = True
    page = _error_page(rf, rf.get("/api/v1/trades/", HTTP_AUTHORIZATION="Token " + "0123456789abcdef" * 4))
    assert "0123456789abcdef" * 4 not in page and "HTTP_AUTHORIZATION" in page
