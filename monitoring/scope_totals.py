"""What the performance figures of a scope read from the database: its finished trades summed per UTC day of
closing, and the hours during which at least one of its trades was open.

Two paths give the same figures. The direct one aggregates the trades (``execution.selectors.trade_day_sums``,
``trade_intervals``). The rollup one reads the accounts' daily trade totals (``execution.models.DailyTradeTotals``,
kept exact in the transaction of every trade write) for the whole UTC days of the period, and the trades only for
the partial days at its ends: a few thousand rows instead of a million trades. The rollup serves every scope whose
trades are whole accounts (one account, a mode, a level); a pair's scope reads its trades directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from django.db.models import DateTimeField, Min, Q, QuerySet, Sum, Value

from execution.models import DailyTradeTotals, PairTrade
from execution.selectors import trade_day_sums, trade_intervals
from pairs.quant.kpis import union_length

if TYPE_CHECKING:
    from monitoring.selectors import Scope

MICROSECONDS_PER_HOUR = 3_600_000_000
MICROSECOND = timedelta(microseconds=1)
SUMMED = ("trades", "wins", "losses", "gross_profit", "gross_loss", "pnl", "fees", "funding", "held_trades")


def scope_trades(accounts: Sequence, pair=None) -> QuerySet[PairTrade]:
    trades = PairTrade.objects.filter(account__in=[a.pk for a in accounts])
    return trades.filter(pair=pair) if pair is not None else trades


def scope_closed_trades(scope: Scope) -> QuerySet[PairTrade]:
    """Finished trades with a result closed in [start, end) of the scope."""
    return scope_trades(scope.accounts, scope.pair).filter(
        state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False, closed_at__gte=scope.start,
        closed_at__lt=scope.end,
    )


def rollup_serves(scope: Scope) -> bool:
    """The daily totals are per account: exact for any set of whole accounts, not for one pair of them."""
    return scope.pair is None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The first and the last midnight of [start, end) that bound whole UTC days, or None when no day is whole."""
    first = _midnight(start.astimezone(UTC).date())
    if first < start:
        first += timedelta(days=1)
    last = _midnight(end.astimezone(UTC).date())
    return (first, last) if first < last else None


def _rollup_day_rows(scope: Scope, first: datetime, last: datetime) -> list[dict]:
    rows = DailyTradeTotals.objects.filter(account__in=[a.pk for a in scope.accounts], day__gte=first.date(),
                                           day__lt=last.date(), trades__gt=0).order_by("day")
    if len(scope.accounts) == 1:  # one row per day already: nothing to sum
        rows = rows.values_list("day", *SUMMED, "held_us")
    else:
        rows = rows.values("day").annotate(**{name: Sum(name) for name in SUMMED}, held=Sum("held_us")) \
            .values_list("day", *SUMMED, "held")
    return [{**dict(zip(SUMMED, row[1:-1], strict=True)), "day": row[0],
             "held": timedelta(microseconds=int(row[-1]))} for row in rows]


def scope_day_rows(scope: Scope, *, rollup: bool = True) -> list[dict]:
    """The finished trades of the scope summed per UTC day of closing: trades, wins, losses, gross profit and loss,
    realised PnL, fees, funding (exact decimals), the holding time and how many trades have an opening time. From
    the daily totals where they serve the scope (``rollup``), else from the trades in one grouped query."""
    closed = scope_closed_trades(scope)
    days = _whole_days(scope.start, scope.end) if rollup and rollup_serves(scope) else None
    if days is None:
        return trade_day_sums(closed)
    first, last = days
    return (trade_day_sums(closed.filter(closed_at__lt=first)) + _rollup_day_rows(scope, first, last)
            + trade_day_sums(closed.filter(closed_at__gte=last)))


def _direct_intervals(scope: Scope, closed_from: datetime) -> list[tuple[int, int]]:
    """The holding intervals of the scope's finished trades closed in [closed_from, end) and of its active ones (two
    queries, each down its own index: an OR of the two would read every trade of the accounts)."""
    trades = scope_trades(scope.accounts, scope.pair).filter(opened_at__isnull=False, opened_at__lt=scope.end)
    finished = trades.filter(state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False,
                             closed_at__gte=closed_from, closed_at__lt=scope.end)
    active = trades.filter(state__in=PairTrade.ACTIVE_STATES)
    return (trade_intervals(finished, origin=scope.start) if closed_from < scope.end else []) + \
        trade_intervals(active.annotate(until=Value(scope.end, output_field=DateTimeField())), origin=scope.start,
                        closing="until")


def _rollup_exposure(scope: Scope, span: int) -> int:
    """Microseconds of [start, end) with a trade of the scope open, from the accounts' daily totals.

    The totals' spans hold every finished trade, also one that closed after the period, which the figures leave out
    (trades closed in the period, and those still open). Such a trade opened on or after ``cut``, the midnight before
    the first of them opened (the period's end when there is none), so the days before it are exact; from the cut on
    the trades' own intervals count (those closed since, and the active ones). Of one account, the whole days before
    all of those are summed by the database (its days' spans don't overlap); the other days' spans are merged with
    the trades' intervals."""
    first_later = scope_trades(scope.accounts).filter(
        state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False, closed_at__gte=scope.end,
        opened_at__lt=scope.end).aggregate(first=Min("opened_at"))["first"]
    cut = scope.end if first_later is None else max(scope.start, _midnight(first_later.astimezone(UTC).date()))
    intervals = _direct_intervals(scope, closed_from=cut)
    totals = DailyTradeTotals.objects.filter(
        account__in=[a.pk for a in scope.accounts], day__gte=scope.start.astimezone(UTC).date(),
        day__lte=(cut - MICROSECOND).astimezone(UTC).date(), open_us__gt=0)
    summed = 0
    earliest = min((opened for opened, _ in intervals), default=span)
    block = _whole_days(scope.start, min(cut, scope.start + max(earliest, 0) * MICROSECOND))
    if block is not None and len(scope.accounts) == 1:
        first, last = block
        summed = totals.filter(day__gte=first.date(), day__lt=last.date()).aggregate(us=Sum("open_us"))["us"] or 0
        totals = totals.filter(Q(day__lt=first.date()) | Q(day__gte=last.date()))
    cut_offset = (cut - scope.start) // MICROSECOND
    for day, spans in totals.values_list("day", "open_spans"):
        offset = (_midnight(day) - scope.start) // MICROSECOND
        intervals += [(offset + a, min(offset + b, cut_offset)) for a, b in spans]
    return int(summed) + union_length(intervals, 0, span)


def scope_exposure_hours(scope: Scope, *, rollup: bool = True) -> float:
    """Hours of [start, end) during which at least one trade of the scope was open: the finished trades of the period
    and the trades still open (to the end), merged by ``pairs.quant.kpis.union_length``. From the daily totals'
    merged spans where they serve the scope, else from every holding interval, as two integers each (microseconds
    from the period's start, computed by the database: MariaDB has no cheap SQL union of intervals)."""
    span = (scope.end - scope.start) // MICROSECOND
    if span <= 0 or not scope.accounts:
        return 0.0
    if rollup and rollup_serves(scope):
        return _rollup_exposure(scope, span) / MICROSECONDS_PER_HOUR
    return union_length(_direct_intervals(scope, closed_from=scope.start), 0, span) / MICROSECONDS_PER_HOUR
