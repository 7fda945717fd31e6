"""Reads of the execution layer."""

from __future__ import annotations

import os
from dataclasses import dataclass

from execution.models import ExchangeAccount
from statarb_site.secrets import decrypt_secret, register_secret


class CredentialsMissing(LookupError):
    pass


@dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # never print the values, even in a traceback's locals
        return "Credentials(api_key=***, api_secret=***)"


def account_credentials(*, account: ExchangeAccount) -> Credentials:
    """The account's key and secret: from the named environment variables first, else the encrypted copies."""
    if account.api_key_env or account.api_secret_env:
        api_key = os.environ.get(account.api_key_env, "")
        api_secret = os.environ.get(account.api_secret_env, "")
        if not api_key or not api_secret:
            raise CredentialsMissing(
                f"Account {account.name!r}: environment variables {account.api_key_env!r} and "
                f"{account.api_secret_env!r} must both be set."
            )
        register_secret(api_key)
        register_secret(api_secret)
        return Credentials(api_key, api_secret)
    if account.has_stored_credentials:
        return Credentials(decrypt_secret(account.api_key_encrypted), decrypt_secret(account.api_secret_encrypted))
    raise CredentialsMissing(f"Account {account.name!r} has no credentials (name env variables or store them).")


def credentials_source(account: ExchangeAccount) -> str:
    """How the account's credentials are provided, for display; never the values."""
    if account.api_key_env or account.api_secret_env:
        return f"env: {account.api_key_env or '?'} / {account.api_secret_env or '?'}"
    if account.has_stored_credentials:
        return "stored encrypted"
    return "none"
