"""Reads of the risk policy: the halts and limits an account trades under, and what the guard noticed."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

from core.market_clock import market_clock
from core.statements import CompiledRead
from risk.models import GuardEvent, Halt, RiskLimit
from risk.policy import ACTIONS, REDUCE, Limits, merge_limits

if TYPE_CHECKING:
    from execution.models import ExchangeAccount


def active_halts(*, account: ExchangeAccount | None = None, now: datetime | None = None) -> QuerySet[Halt]:
    """Halts in force at ``now`` (default: ``core.market_clock``, the wall clock live; a replay passes its own):
    not cleared and latched past ``now``. Of every account, or those that stop ``account`` (its own and the
    system-wide ones)."""
    now = now or market_clock().now()
    halts = Halt.objects.filter(Q(until__isnull=True) | Q(until__gt=now), cleared_at__isnull=True)
    if account is not None:
        halts = halts.filter(Q(account=account) | Q(account__isnull=True))
    return halts


def _halts_in_force(now: datetime, account_ids: list[int]) -> QuerySet[Halt]:
    return active_halts(now=now).filter(Q(account_id__in=account_ids) | Q(account__isnull=True))


def _account_halts(now: datetime, account_id: int) -> QuerySet[Halt]:
    return Halt.objects.filter(Q(until__isnull=True) | Q(until__gt=now), cleared_at__isnull=True).filter(
        Q(account_id=account_id) | Q(account__isnull=True))


# The bot reads these every tick, the guard every cycle (#18: compiled once, core.statements).
_HALTS_IN_FORCE = CompiledRead(_halts_in_force)
_ACCOUNT_HALTS = CompiledRead(_account_halts)
_LIMIT_ROWS = CompiledRead(lambda account_ids: RiskLimit.objects.filter(
    Q(account_id__in=account_ids) | Q(account__isnull=True), enabled=True))


def halts_in_force(*, now: datetime, account_ids: list[int]) -> list[Halt]:
    """``active_halts`` at ``now`` that stop any of ``account_ids`` (theirs and the system-wide ones), as a list."""
    return _HALTS_IN_FORCE.list(now, list(account_ids))


def account_halts(*, account_id: int, now: datetime) -> list[Halt]:
    """``active_halts(account=..., now=...)`` as a list: the same statement, compiled once."""
    return _ACCOUNT_HALTS.list(now, account_id)


def account_state(halts: list[Halt]) -> str:
    """active, reducing or halted, from the halts in force on an account (pair pauses leave it active)."""
    modes = {h.mode for h in halts if h.pair_id is None}
    if Halt.Mode.HALT in modes:
        return "halted"
    return "reducing" if Halt.Mode.REDUCE in modes else "active"


def entry_blocked_by(halts: list[Halt], *, pair_id: int) -> Halt | None:
    """The halt that forbids a new entry of ``pair_id``: any account-wide halt, or a pause of that pair."""
    return next((h for h in halts if h.pair_id is None or h.pair_id == pair_id), None)


def recent_guard_events(*, limit: int = 20) -> QuerySet[GuardEvent]:
    return GuardEvent.objects.select_related("account")[:limit]


def limits_for(account: ExchangeAccount) -> Limits:
    """The limits ``account`` trades under: the strictest of its own row and the system-wide row. One query."""
    return merge_limits(list(RiskLimit.objects.filter(Q(account=account) | Q(account__isnull=True), enabled=True)))


def limits_by_account(account_ids: list[int]) -> dict[int, Limits]:
    """``limits_for`` of many accounts in one query; key 0 holds the system-wide limits alone."""
    rows = _LIMIT_ROWS.list(list(account_ids))
    system = [r for r in rows if r.account_id is None]
    limits = {pk: merge_limits(system + [r for r in rows if r.account_id == pk]) for pk in account_ids}
    limits[0] = merge_limits(system)  # the system-wide checks (the Celery queues)
    return limits


def unguarded_accounts(accounts) -> list:
    """The accounts (of ``accounts``) that no loss limit covers: the limits they trade under (their row and the
    system-wide one) set no daily loss nor drawdown limit whose action stops new entries (a limit that only
    notifies tells people and stops nothing), so the guard measures them but can't stop a bad day."""
    limits = limits_by_account([a.pk for a in accounts])
    return [a for a in accounts if not _stops_a_bad_day(limits[a.pk])]


def _stops_a_bad_day(limits: Limits) -> bool:
    def stops(check: str) -> bool:  # reduce or stricter (pause_pair can't be a loss limit's: risk.policy)
        return ACTIONS.index(limits.action(check)) >= ACTIONS.index(REDUCE)

    daily = limits.daily_loss_limit is not None or limits.daily_loss_limit_pct is not None
    return (daily and stops("daily_loss")) or (limits.max_drawdown_pct is not None and stops("drawdown"))
