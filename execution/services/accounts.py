"""Writes of the execution layer."""

from __future__ import annotations

from django.db import transaction

from core.secrets import encrypt_secret
from execution.models import ExchangeAccount


@transaction.atomic
def account_store_credentials(*, account: ExchangeAccount, api_key: str, api_secret: str) -> ExchangeAccount:
    """Encrypt and store an account's API key and secret (needs STATARB_SECRETS_KEY)."""
    if not api_key or not api_secret:
        raise ValueError("Both the API key and the API secret are needed.")
    account.api_key_encrypted = encrypt_secret(api_key)
    account.api_secret_encrypted = encrypt_secret(api_secret)
    account.save(update_fields=["api_key_encrypted", "api_secret_encrypted", "updated_at"])
    return account
