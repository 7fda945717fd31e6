"""Writes of the execution layer."""

from __future__ import annotations

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from core.secrets import encrypt_secret, rotate_secret
from execution.models import ExchangeAccount


@sensitive_variables("api_key", "api_secret")
def account_store_credentials(*, account: ExchangeAccount, api_key: str, api_secret: str) -> ExchangeAccount:
    """Encrypt and store an account's API key and secret (needs STATARB_SECRETS_KEY)."""
    # atomic as a block, not a decorator: the decorator's frame holds the arguments under a name (kwds) that
    # sensitive_variables doesn't cover, and an error page listed the plain key there.
    if not api_key or not api_secret:
        raise ValueError("Both the API key and the API secret are needed.")
    with transaction.atomic():
        account.api_key_encrypted = encrypt_secret(api_key)
        account.api_secret_encrypted = encrypt_secret(api_secret)
        account.save(update_fields=["api_key_encrypted", "api_secret_encrypted", "updated_at"])
    return account


@transaction.atomic
def account_credentials_rotate() -> int:
    """Re-encrypt every stored credential with the first key of STATARB_SECRETS_KEY (after a new key was put first);
    all or nothing. Returns the number of accounts re-encrypted."""
    accounts = list(ExchangeAccount.objects.select_for_update().exclude(api_key_encrypted="", api_secret_encrypted=""))
    for account in accounts:
        account.api_key_encrypted = rotate_secret(account.api_key_encrypted) if account.api_key_encrypted else ""
        account.api_secret_encrypted = (rotate_secret(account.api_secret_encrypted)
                                        if account.api_secret_encrypted else "")
        account.save(update_fields=["api_key_encrypted", "api_secret_encrypted", "updated_at"])
    return len(accounts)
