"""Reads that shape what the dashboard pages draw: chart series, the scope switcher, today's PnL against its limit,
the system's health. Every figure comes from ``monitoring.selectors`` (one metrics module)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Q, Sum
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from execution.models import BotHeartbeat, ExchangeAccount, PairTrade, Signal
from monitoring.selectors import Scope, scope_daily_pnl, scope_equity, scope_monthly_returns, scope_pnl_by
from pairs.models import Pair
from risk.models import RiskLimit

HEARTBEAT_STALE_AFTER = timedelta(minutes=3)  # the bot ticks every minute; three missed ticks mean it is down
PAIR_CHART_BARS = 500


def scope_choices() -> list[dict]:
    """The account switcher: every account with its mode, then each mode's accounts combined."""
    accounts = list(ExchangeAccount.objects.order_by("name").values("id", "name", "mode"))
    choices = [{"value": f"a{a['id']}", "label": a["name"], "mode": a["mode"]} for a in accounts]
    for mode in sorted({a["mode"] for a in accounts}):
        choices.append({"value": f"m{mode}", "label": f"all {mode} accounts (combined)", "mode": mode})
    return choices


def scope_params(query) -> dict:
    """Translate the switcher's ``scope`` (a<id> or m<mode>) and the date range into scope parameters."""
    params = {k: query.get(k) for k in ("start", "end") if query.get(k)}
    chosen = query.get("scope", "")
    if chosen.startswith("a") and chosen.isascii() and chosen[1:].isdigit():
        params["account"] = chosen[1:]
    elif chosen.startswith("m"):
        params["mode"] = chosen[1:]
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
    rows = scope_monthly_returns(scope)
    return [dict(row, pct=None if row["return"] is None else 100 * row["return"]) for row in rows]


@dataclass(frozen=True)
class TodayPnl:
    realised: Decimal
    limit: Decimal | None  # the loss that halts the account today (positive), None without a limit

    @property
    def used_pct(self) -> float | None:
        if not self.limit:
            return None
        return float(max(-self.realised, Decimal(0)) / self.limit * 100)


def today_pnl(account: ExchangeAccount, *, now: datetime | None = None) -> TodayPnl:
    """Realised PnL of the trades the account closed today (UTC) and its daily loss limit (its own or the default):
    the amount, or the fraction of its capital."""
    now = now or timezone.now()
    day_start = datetime.combine(now.date(), time.min, tzinfo=UTC)
    realised = PairTrade.objects.filter(account=account, closed_at__gte=day_start, realised_pnl__isnull=False) \
        .aggregate(total=Sum("realised_pnl"))["total"] or Decimal(0)
    rows = {r.account_id: r for r in RiskLimit.objects.filter(Q(account=account) | Q(account__isnull=True),
                                                               enabled=True)}
    limit = None
    for row in (rows.get(account.pk), rows.get(None)):
        if row is None:
            continue
        if row.daily_loss_limit is not None:
            limit = row.daily_loss_limit
        elif row.daily_loss_limit_pct is not None:
            limit = account.capital * Decimal(str(row.daily_loss_limit_pct))
        if limit is not None:
            break
    return TodayPnl(realised=realised, limit=limit)


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
    rows = list(queryset[(page - 1) * per_page:page * per_page + 1])
    return ListPage(object_list=rows[:per_page], number=page, has_next=len(rows) > per_page)


def heartbeats(*, now: datetime | None = None) -> list[dict]:
    """Every bot's last beat, flagged stale when older than HEARTBEAT_STALE_AFTER."""
    now = now or timezone.now()
    return [{"beat": hb, "stale": now - hb.beat_at > HEARTBEAT_STALE_AFTER}
            for hb in BotHeartbeat.objects.select_related("account").order_by("account__name")]


def periodic_tasks() -> list[PeriodicTask]:
    """The beat schedule with each task's last run (django-celery-beat)."""
    return list(PeriodicTask.objects.order_by("name"))


def pair_chart(pair: Pair) -> dict:
    """The pair's recent z-scores and spreads (its signals), with its trades' entries and exits marked."""
    signals = list(Signal.objects.filter(pair=pair).order_by("-bar_time")
                   .values_list("bar_time", "zscore", "spread")[:PAIR_CHART_BARS])[::-1]
    labels = [s[0].strftime("%Y-%m-%d %H:%M") for s in signals]
    index = {s[0]: i for i, s in enumerate(signals)}
    entries, exits = [None] * len(signals), [None] * len(signals)
    for trade in PairTrade.objects.filter(pair=pair).exclude(opened_at=None):
        for moment, z, marks in ((trade.opened_at, trade.entry_zscore, entries),
                                 (trade.closed_at, trade.exit_zscore, exits)):
            slot = _bar_at_or_before(index, moment)
            if slot is not None and z is not None:
                marks[slot] = z
    return {"labels": labels, "z": [s[1] for s in signals], "spread": [s[2] for s in signals],
            "entries": entries, "exits": exits}


def _bar_at_or_before(index: dict, moment: datetime | None) -> int | None:
    if moment is None:
        return None
    earlier = [t for t in index if t <= moment]
    return index[max(earlier)] if earlier else None
