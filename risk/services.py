"""Writes of the risk policy: halts and guard events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from risk.models import GuardEvent, Halt

if TYPE_CHECKING:
    from execution.models import ExchangeAccount


@transaction.atomic
def halt_raise(
    *, account: ExchangeAccount | None, source: str, reason: str, flatten: bool = False,
    created_by: AbstractBaseUser | None = None,
) -> Halt:
    """Stop new trades for an account (or all, when ``account`` is None); an identical active halt is reused."""
    existing = (
        Halt.objects.select_for_update()
        .filter(account=account, source=source, reason=reason, cleared_at__isnull=True)
        .first()
    )
    if existing:
        if flatten and not existing.flatten:
            existing.flatten = True
            existing.save(update_fields=["flatten"])
        return existing
    return Halt.objects.create(account=account, source=source, reason=reason, flatten=flatten, created_by=created_by)


def guard_event_record(
    *, account: ExchangeAccount | None, kind: str, message: str, severity: str = GuardEvent.Severity.WARNING,
    details: dict | None = None,
) -> GuardEvent:
    return GuardEvent.objects.create(account=account, kind=kind, severity=severity, message=message[:1000],
                                     details=details or {})


@transaction.atomic
def halts_clear(*, halts: QuerySet[Halt], cleared_by: AbstractBaseUser | None) -> int:
    return halts.filter(cleared_at__isnull=True).update(cleared_at=timezone.now(), cleared_by=cleared_by)
