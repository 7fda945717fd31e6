"""Secrets: encryption at rest with a key from the environment, and the set of values never to be shown.

Credentials stored on an account are Fernet tokens made with STATARB_SECRETS_KEY; the plain value exists only
in memory while an exchange client is built. Every plain secret that the process handles is registered here,
so that logs and notifications can mask it wherever it turns up.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

MASK = "***"
# Values shorter than this are not masked: masking "1" or "ab" everywhere would garble logs without hiding
# anything that could be a credential.
_MIN_SECRET_LENGTH = 6

_registered_secrets: set[str] = set()
_lock = threading.Lock()


class SecretsKeyMissing(ImproperlyConfigured):
    pass


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _registered_secrets.add(value)


def _configured_passwords() -> list[str]:
    """The passwords of the database, the broker, the result backend and the mail server, from the settings."""
    passwords = [str(db.get("PASSWORD") or "") for db in getattr(settings, "DATABASES", {}).values()]
    passwords.append(str(getattr(settings, "EMAIL_HOST_PASSWORD", "") or ""))
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"):
        url = getattr(settings, name, "") or ""
        try:
            passwords.append(urlsplit(str(url)).password or "")
        except ValueError:  # not a URL: nothing in it to find
            continue
    return passwords


def known_secret_values() -> frozenset[str]:
    configured = (
        *getattr(settings, "STATARB_SECRETS_KEY", "").split(","),
        getattr(settings, "TELEGRAM_BOT_TOKEN", ""),
        getattr(settings, "SECRET_KEY", ""),
        *_configured_passwords(),
    )
    with _lock:
        values = set(_registered_secrets)
    values.update(v.strip() for v in configured if v and len(v.strip()) >= _MIN_SECRET_LENGTH)
    return frozenset(values)


def redact(text: str, secrets: frozenset[str] | None = None) -> str:
    """Replace every known secret in ``text`` with a mask, longest first so overlaps mask fully."""
    for secret in sorted(secrets if secrets is not None else known_secret_values(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _keys() -> list[str]:
    return [key.strip() for key in settings.STATARB_SECRETS_KEY.split(",") if key.strip()]


def _fernet() -> MultiFernet:
    """Every configured key (comma-separated in STATARB_SECRETS_KEY): the first encrypts, any of them decrypts, so
    a new key can be put first and the stored credentials re-encrypted (``rotate_secret``) before the old goes."""
    keys = _keys()
    if not keys:
        raise SecretsKeyMissing(
            "STATARB_SECRETS_KEY is not set: it is needed to store or read encrypted credentials. "
            "Either set it, or name environment variables on the account instead of storing the secret."
        )
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except ValueError:
            raise SecretsKeyMissing(
                f"STATARB_SECRETS_KEY: key {position} of {len(keys)} is not a valid Fernet key (32 url-safe base64 "
                "bytes, as Fernet.generate_key() makes; several keys are separated by commas)."
            ) from None
    return MultiFernet(fernets)


def secrets_key_check() -> None:
    """SecretsKeyMissing, saying what is wrong, unless STATARB_SECRETS_KEY is set and each of its keys is a Fernet
    key: asked before credentials are taken (the admin's form) or rotated, not found out half way through a save."""
    _fernet()


def rotate_secret(token: str) -> str:
    """``token`` re-encrypted with the first key (it may have been made with any configured key)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsKeyMissing(
            "A stored credential could not be decrypted with any key of STATARB_SECRETS_KEY."
        ) from exc


@sensitive_variables()  # every variable of it and of what it calls: the plain secret is in each
def encrypt_secret(plain: str) -> str:
    register_secret(plain)
    return _fernet().encrypt(plain.encode()).decode()


@sensitive_variables()
def decrypt_secret(token: str) -> str:
    try:
        plain = _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsKeyMissing(
            "A stored credential could not be decrypted with STATARB_SECRETS_KEY (was the key rotated?)."
        ) from exc
    register_secret(plain)
    return plain
