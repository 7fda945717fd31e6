"""Reads that shape what the dashboard pages draw: chart series, the scope switcher, today's PnL against its limit,
the system's health. Every figure comes from ``monitoring.selectors`` (one metrics module)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from celery import current_app
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.exceptions import ValidationError

from core.db import page_rows
from core.market_clock import market_clock
from execution.models import BotHeartbeat, ExchangeAccount, PairTrade, Signal
from monitoring.guard.live import celery_queue_lengths
from monitoring.selectors import Scope, scope_daily_pnl, scope_equity, scope_monthly_returns, scope_pnl_by
from pairs.models import Pair
from risk.models import AccountGuardState, DailyPnlSnapshot
from risk.selectors import limits_by_account

HEARTBEAT_STALE_AFTER = timedelta(minutes=3)  # the bot ticks every minute; three missed ticks mean it is down
PAIR_CHART_BARS = 500


def scope_choices() -> list[dict]:
    """The account switcher: every account with its mode, then each mode's accounts combined, then the accounts of
    one mode on one level combined (the rows of the table by level)."""
    accounts = list(ExchangeAccount.objects.order_by("name").values("id", "name", "mode", "level__number"))
    choices = [{"value": f"a{a['id']}", "label": a["name"], "mode": a["mode"]} for a in accounts]
    for mode in sorted({a["mode"] for a in accounts}):
        choices.append({"value": f"m{mode}", "label": f"all {mode} accounts (combined)", "mode": mode})
    levels = sorted({(a["level__number"], a["mode"]) for a in accounts if a["level__number"] is not None})
    for number, mode in levels:
        choices.append({"value": f"l{number}-{mode}", "label": f"level {number} {mode} accounts (combined)",
                        "mode": mode})
    return choices


def scope_params(query) -> dict:
    """Translate the switcher's ``scope`` (a<id>, m<mode> or l<level>-<mode>) and the date range into scope
    parameters."""
    params = {k: query.get(k) for k in ("start", "end") if query.get(k)}
    chosen = query.get("scope", "")
    if chosen.startswith("a") and chosen.isascii() and chosen[1:].isdigit():
        params["account"] = chosen[1:]
    elif chosen.startswith("m"):
        params["mode"] = chosen[1:]
    elif chosen.startswith("l"):
        params["level"], _, params["mode"] = chosen[1:].partition("-")
    elif chosen:  # not silently the default view in place of the one asked for (a link typed or cut short)
        raise ValidationError({"scope": f"{chosen!r} is none of the switcher's views (a<account id>, m<mode>, "
                                        "l<level>-<mode>)"})
    return params


def chart_series(scope: Scope) -> dict:
    """What the dashboard's charts draw, as plain JSON values."""
    equity = scope_equity(scope)
    daily = scope_daily_pnl(scope)
    by_pair = scope_pnl_by(scope, "pair")
    by_reason = scope_pnl_by(scope, "exit_reason")
    return {
        "equity": {
            "labels": [p.at.strftime("%Y-%m-%d %H:%M") if p.at else "start" for p in equity],
            "equity": [round(p.equity, 2) for p in equity],
            "drawdown": [round(-100 * p.drawdown, 3) for p in equity],
        },
        "daily": {"labels": [row["day"].isoformat() for row in daily], "pnl": [float(row["pnl"]) for row in daily]},
        "by_pair": {"labels": [row["name"] for row in by_pair], "pnl": [float(row["pnl"]) for row in by_pair]},
        "by_reason": {"labels": [row["name"] for row in by_reason], "pnl": [float(row["pnl"]) for row in by_reason]},
    }


def monthly_table(scope: Scope) -> list[dict]:
    if not scope.accounts:  # a new install: no capital, so no month has a return (not a month of a dash)
        return []
    rows = scope_monthly_returns(scope)
    return [dict(row, pct=None if row["return"] is None else 100 * row["return"]) for row in rows]


@dataclass(frozen=True)
class TodayPnl:
    """An account's day as its guard last measured it: equity marked to market against the day's start, and the
    daily loss that halts it (the strictest of its own and the system-wide limits, as the guard applies them)."""

    account: ExchangeAccount
    pnl: Decimal | None  # None until the guard has measured the account today
    start_equity: Decimal | None
    limit: Decimal | None  # the loss (positive) that halts the account today; None until measured or without a limit
    state: str  # the guard's trading state: active, reducing or halted
    checked_at: datetime | None
    limit_pct: float | None = None  # the percentage limit (a fraction) while the day's start is not measured yet

    @property
    def limit_percent(self) -> float | None:
        return None if self.limit_pct is None else 100 * self.limit_pct

    @property
    def used_pct(self) -> float | None:
        if self.limit is None or self.pnl is None:
            return None
        loss = max(-self.pnl, Decimal(0))
        if not self.limit:  # a limit of 0: any loss is all of it
            return 100.0 if loss else 0.0
        return float(loss / self.limit * 100)


def guard_today(accounts: list[ExchangeAccount], *, now: datetime | None = None) -> list[TodayPnl]:
    """Today's (UTC) PnL of each account against its daily loss limit, from the guard's own records: today's daily
    snapshot (start-of-day and latest equity) and its state. Three queries whatever the number of accounts."""
    today = (now or market_clock().now()).astimezone(UTC).date()
    ids = [a.pk for a in accounts]
    snapshots = {s.account_id: s for s in DailyPnlSnapshot.objects.filter(account_id__in=ids, date=today)}
    states = {s.account_id: s for s in AccountGuardState.objects.filter(account_id__in=ids)}
    limits = limits_by_account(ids)
    rows = []
    for account in accounts:
        snapshot, state, limit = snapshots.get(account.pk), states.get(account.pk), limits[account.pk]
        start = snapshot.starting_equity if snapshot else None
        # The guard halts on whichever of the two limits a loss crosses first: the nearer one is the day's limit.
        candidates = [limit.daily_loss_limit]
        if limit.daily_loss_limit_pct is not None and start is not None:
            candidates.append(start * Decimal(repr(limit.daily_loss_limit_pct)))
        amount = min((c for c in candidates if c is not None), default=None)
        # Before the guard has measured the day a percentage has no amount yet, but it is a limit all the same.
        pct = limit.daily_loss_limit_pct if start is None else None
        rows.append(TodayPnl(account=account, pnl=snapshot.ending_equity - start if snapshot else None,
                             start_equity=start, limit=amount, state=state.state if state else "active",
                             checked_at=state.checked_at if state else None, limit_pct=pct))
    return rows


def today_pnl(account: ExchangeAccount, *, now: datetime | None = None) -> TodayPnl:
    return guard_today([account], now=now)[0]


@dataclass(frozen=True)
class ListPage:
    """One page of a long list, read without counting the list: one row more than shown says whether a next page
    exists (a COUNT over a million trades would cost more than the page)."""

    object_list: list
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1


MAX_PAGE_NUMBER = 100_000  # beyond it an OFFSET scans more rows than a person pages through


def list_page(queryset, number: str | None, per_page: int) -> ListPage:
    """Page ``number`` (1 when missing or not a whole number from 1 to MAX_PAGE_NUMBER) of ``queryset``."""
    text = str(number or "")
    page = int(text) if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_PAGE_NUMBER else 1
    rows, has_next = page_rows(queryset, (page - 1) * per_page, per_page)
    return ListPage(object_list=rows, number=page, has_next=has_next)


def heartbeats(*, now: datetime | None = None) -> list[dict]:
    """Every bot's last beat, flagged stale when older than HEARTBEAT_STALE_AFTER. A disabled account's bot does not
    run (a finished replay's account): its old beat is no alarm, as /health/ and the guard don't count it either."""
    now = now or timezone.now()
    return [{"beat": hb, "disabled": not hb.account.enabled,
             "stale": hb.account.enabled and now - hb.beat_at > HEARTBEAT_STALE_AFTER}
            for hb in BotHeartbeat.objects.select_related("account").order_by("account__name")]


def queue_lengths() -> dict:
    """Messages waiting on each watched Celery queue (what the guard's queue check reads), each flagged when above
    the system-wide ``queue_max_length``; ``readable`` False when the broker could not say."""
    lengths = celery_queue_lengths(current_app)
    limit = limits_by_account([])[0].queue_max_length
    return {"readable": bool(lengths), "limit": limit,
            "rows": [{"name": name, "length": n, "over": limit is not None and n > limit}
                     for name, n in sorted(lengths.items())]}


def periodic_tasks() -> list[PeriodicTask]:
    """The beat schedule with each task's last run (django-celery-beat)."""
    return list(PeriodicTask.objects.order_by("name"))


def pair_chart(pair: Pair) -> dict:
    """The pair's recent z-scores and spreads (its signals), with its trades' entries and exits marked."""
    signals = list(Signal.objects.filter(pair=pair).order_by("-bar_time")
                   .values_list("bar_time", "zscore", "spread")[:PAIR_CHART_BARS])[::-1]
    labels = [s[0].strftime("%Y-%m-%d %H:%M") for s in signals]
    bars = [s[0] for s in signals]
    entries, exits = [None] * len(signals), [None] * len(signals)
    # Only the trades that can be marked: open, or closed since the first bar drawn (a pair traded for years has
    # thousands before it).
    trades = [] if not bars else (
        PairTrade.objects.filter(pair=pair).exclude(opened_at=None)
        .filter(Q(closed_at=None) | Q(closed_at__gte=bars[0]))
        .values_list("opened_at", "entry_zscore", "closed_at", "exit_zscore"))
    for opened_at, entry_z, closed_at, exit_z in trades:
        for moment, z, marks in ((opened_at, entry_z, entries), (closed_at, exit_z, exits)):
            slot = _bar_at_or_before(bars, moment)
            if slot is not None and z is not None:
                marks[slot] = z
    return {"labels": labels, "z": [s[1] for s in signals], "spread": [s[2] for s in signals],
            "entries": entries, "exits": exits}


def _bar_at_or_before(bars: list[datetime], moment: datetime | None) -> int | None:
    """The index of the last bar at or before ``moment`` in ``bars`` (ascending), None before the first."""
    if moment is None:
        return None
    slot = bisect_right(bars, moment) - 1
    return slot if slot >= 0 else None
