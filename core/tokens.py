"""API tokens (django-rest-knox): stored as a hash, shown once when made, expiring, revoked per user.

A token carries its user's permissions, so a reporting tool gets a user in the ``reporting`` role (read only) and
a token of its own; revoking the user's tokens cuts the tool off without touching anyone else.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import AuthToken
from rest_framework.exceptions import AuthenticationFailed

from core.audit import audit_record

MAX_TOKEN_DAYS = 3650


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's "Authorization: Token <token>", with a header that is not UTF-8 (a token pasted with an accented
    character: HTTP sends it as Latin-1) answered 401 like any other wrong token: knox decodes it as UTF-8 and its
    UnicodeDecodeError was a 500, for anyone, before any authentication."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError as error:
            raise AuthenticationFailed("Invalid token.") from error
        return super().authenticate_credentials(token)


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI schema's security scheme for the class above (drf-spectacular matches knox's class exactly)."""

    target_class = "core.tokens.TokenAuthentication"


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser, days: int, channel: str, actor_label: str,
                     actor: AbstractBaseUser | None = None) -> tuple[AuthToken, str]:
    """A new token for ``user`` valid ``days`` days; returns the stored row and the token itself (only now known)."""
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise ValueError(f"days must be from 1 to {MAX_TOKEN_DAYS}, got {days}")
    instance, token = AuthToken.objects.create(user=user, expiry=timedelta(days=days))
    audit_record(action="create_api_token", channel=channel, actor=actor, actor_label=actor_label, target=user,
                 summary=f"API token {instance.token_key}... for {user.get_username()}, "
                         f"expires {instance.expiry:%Y-%m-%d}",
                 details={"token_key": instance.token_key, "days": days})
    return instance, token


@transaction.atomic
def api_tokens_revoke(*, user: AbstractBaseUser, channel: str, actor_label: str,
                      actor: AbstractBaseUser | None = None, reason: str = "") -> int:
    """Delete every token of ``user``; returns how many there were. Asked for by hand (no ``reason``), it is audited
    even when there was none; revoked because of something else (``reason``: a password change, a deactivation),
    only when there were some: that change has its own entry."""
    tokens = AuthToken.objects.filter(user=user)
    keys = list(tokens.values_list("token_key", flat=True))
    if reason and not keys:
        return 0
    tokens.delete()
    audit_record(action="revoke_api_tokens", channel=channel, actor=actor, actor_label=actor_label, target=user,
                 summary=f"{len(keys)} API token(s) of {user.get_username()} revoked"
                         + (f": {reason}" if reason else ""),
                 details={"token_keys": keys, **({"reason": reason} if reason else {})})
    return len(keys)


def credentials_changed(*, user: AbstractBaseUser, change: str, channel: str, actor_label: str,
                        actor: AbstractBaseUser | None = None) -> int:
    """What follows a change of ``user``'s password or a deactivation (``change`` says which), in the caller's
    transaction: every API token of the user is revoked. A token is a password of its own that knox checks without
    the account's password, so whoever had stolen a token kept it after its owner changed a compromised password;
    and a deactivated user's tokens came back to life with a reactivation. The user's sessions end through Django's
    session hash (a new password) or the backend's refusal of inactive users."""
    return api_tokens_revoke(user=user, channel=channel, actor=actor, actor_label=actor_label, reason=change)
