"""Reads of the risk policy: the halts and limits an account trades under, and what the guard noticed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

from risk.models import GuardEvent, Halt, RiskLimit

if TYPE_CHECKING:
    from execution.models import ExchangeAccount


def active_halts(*, account: ExchangeAccount | None = None) -> QuerySet[Halt]:
    """Active halts: of every account, or those that stop ``account`` (its own and the system-wide ones)."""
    halts = Halt.objects.filter(cleared_at__isnull=True)
    if account is not None:
        halts = halts.filter(Q(account=account) | Q(account__isnull=True))
    return halts


def recent_guard_events(*, limit: int = 20) -> QuerySet[GuardEvent]:
    return GuardEvent.objects.select_related("account")[:limit]


@dataclass(frozen=True)
class AccountLimits:
    """The limits an account trades under: its own where set, else the system-wide ones (None: no limit)."""

    max_open_trades: int | None
    max_gross_exposure: Decimal | None


def limits_for(account: ExchangeAccount) -> AccountLimits:
    """The account's own limits where set, else the system-wide ones. One query."""
    rows = {r.account_id: r for r in RiskLimit.objects.filter(Q(account=account) | Q(account__isnull=True),
                                                               enabled=True)}
    own, default = rows.get(account.pk), rows.get(None)

    def pick(name):
        for row in (own, default):
            if row is not None and getattr(row, name) is not None:
                return getattr(row, name)
        return None

    return AccountLimits(pick("max_open_trades"), pick("max_gross_exposure"))
