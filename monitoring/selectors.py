"""Reads of monitoring: performance figures, equity curves and daily PnL, for the dashboard, the API, the report and
the replay summary. Every KPI comes from ``pairs.quant.kpis`` (definitions there and in the README).

A scope is one account, or the accounts of one mode combined (optionally those trading one level), narrowed to a
pair and a period. Return and drawdown are on the capital of the accounts in scope; a combined view is labelled as
such and never adds paper or demo money to real money.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Max, Min, QuerySet, Sum

from core.market_clock import market_clock
from execution.models import ExchangeAccount, PairTrade
from monitoring.scope_totals import (
    scope_closed_trades,
    scope_day_rows,
    scope_exposure_hours,
    scope_trades,
)
from pairs.models import Pair
from pairs.quant.kpis import DayTotals, daily_curve, daily_equity, daily_kpis
from risk.models import DailyPnlSnapshot


class MixedModesError(ValueError):
    """A combined view was asked over accounts of different modes (paper, demo, real)."""


@dataclass(frozen=True)
class Scope:
    """What a set of figures covers. ``accounts`` all share ``mode``."""

    accounts: tuple[ExchangeAccount, ...]
    mode: str | None
    label: str
    start: datetime
    end: datetime
    level: int | None = None
    pair: Pair | None = None

    @property
    def combined(self) -> bool:
        return len(self.accounts) != 1


@dataclass(frozen=True)
class PerformanceSummary:
    label: str
    mode: str | None
    combined: bool
    accounts: tuple[str, ...]
    start: datetime
    end: datetime
    total_trades: int
    wins: int
    losses: int
    win_rate: float | None
    profit_factor: float | None
    realised_pnl: Decimal
    fees: Decimal
    funding: Decimal
    capital: Decimal
    total_return: float | None
    max_drawdown: float | None
    sharpe: float | None
    sortino: float | None
    expectancy: float | None
    average_win: float | None
    average_loss: float | None
    average_holding_hours: float | None
    exposure: float | None
    # Closed by reconciliation with no execution to say how (a liquidation, a close by hand long ago): no realised
    # PnL, so in none of the figures above, but their loss is real: the dashboard and the API say how many.
    without_result: int = 0

    @property
    def total_return_pct(self) -> float | None:
        return None if self.total_return is None else 100 * self.total_return

    @property
    def max_drawdown_pct(self) -> float | None:
        return None if self.max_drawdown is None else 100 * self.max_drawdown

    @property
    def win_rate_pct(self) -> float | None:
        return None if self.win_rate is None else 100 * self.win_rate

    @property
    def exposure_pct(self) -> float | None:
        return None if self.exposure is None else 100 * self.exposure

    @property
    def profit_factor_unbounded(self) -> bool:
        """True when there were wins and no losing trade (profit factor +inf)."""
        return self.profit_factor == math.inf


def closed_trades(*, account: ExchangeAccount | None = None) -> QuerySet[PairTrade]:
    """Finished trades with a result: closed ones, and failed or unwound ones whose legs cost or made money."""
    trades = PairTrade.objects.filter(state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False)
    if account is not None:
        trades = trades.filter(account=account)
    return trades


def performance_scope(*, account: ExchangeAccount | None = None, mode: str | None = None, level: int | None = None,
                      pair: Pair | None = None, start: datetime | None = None,
                      end: datetime | None = None) -> Scope:
    """The scope of one account, or of every account of ``mode`` (and of ``level``) combined.

    Without ``mode``, a combined scope takes the accounts' only mode and raises MixedModesError when they have
    several. ``start`` defaults to the first trade's opening (or closing) in scope, ``end`` to now, or for accounts
    that are all disabled (their bots don't run: a finished replay's account) to the end of their last active day:
    months of a stopped account's flat equity would show as returns of 0 % and dilute its Sharpe.
    """
    accounts, label, mode = _scope_accounts(account, mode, level)
    if end is None:
        end = _default_end(accounts, pair)
    if start is None:
        # Two queries: MariaDB reads each minimum off its own index, not one of them by scanning.
        trades = scope_trades(accounts, pair)
        firsts = [trades.aggregate(first=Min(name))["first"] for name in ("opened_at", "closed_at")]
        start = min((m for m in firsts if m is not None), default=end)
    if pair is not None:
        label += f", pair {pair}"
    return Scope(accounts=tuple(accounts), mode=accounts[0].mode if account else mode, label=label, start=start,
                 end=end, level=level, pair=pair)


def scope_marks(scope: Scope) -> dict[date, float]:
    """Mark-to-market points: the unrealised PnL of the daily snapshots (summed over the accounts) at the end of each
    day of the period. A pair's scope has none: a snapshot covers its whole account. A day whose unrealised PnL is 0
    is no mark: 0 is what the daily snapshot writes when nothing marked the open trades."""
    if scope.pair is not None:
        return {}
    rows = DailyPnlSnapshot.objects.filter(account__in=[a.pk for a in scope.accounts], date__gte=scope.start.date(),
                                           date__lte=scope.end.date()).order_by("date")
    if len(scope.accounts) == 1:  # one snapshot per day already: nothing to sum
        rows = rows.values_list("date", "unrealised_pnl")
    else:
        rows = rows.values("date").annotate(unrealised=Sum("unrealised_pnl")).values_list("date", "unrealised")
    # A day's end lies in [start, end) for the days from start's to the one before end's (day_end, without a
    # datetime per day).
    first, last = scope.start.astimezone(UTC).date(), scope.end.astimezone(UTC).date() - timedelta(days=1)
    return {day: float(unrealised) for day, unrealised in rows if unrealised and first <= day <= last}


def _capital(scope: Scope) -> Decimal:
    return sum((a.capital for a in scope.accounts), Decimal(0))


def _day_totals(rows: list[dict]) -> list[DayTotals]:
    def number(value) -> float:
        return float(value) if value is not None else 0.0

    return [DayTotals(day=r["day"], trades=r["trades"], wins=r["wins"], losses=r["losses"],
                      gross_profit=number(r["gross_profit"]), gross_loss=number(r["gross_loss"]), pnl=number(r["pnl"]),
                      fees=number(r["fees"]), funding=number(r["funding"]),
                      held_hours=r["held"].total_seconds() / 3600 if r["held"] is not None else 0.0,
                      held_trades=r["held_trades"]) for r in rows]


def scope_performance(scope: Scope, *, rollup: bool = True) -> PerformanceSummary:
    """Every KPI of ``scope`` (definitions in ``pairs.quant.kpis``), from SQL day totals: money sums are exact,
    ratios floats. ``rollup``: read the daily trade totals where they serve the scope (the same figures; False
    aggregates the trades, as the tests do to compare)."""
    rows = scope_day_rows(scope, rollup=rollup)
    capital = _capital(scope)
    kpis = daily_kpis(capital=float(capital), days=_day_totals(rows), start=scope.start, end=scope.end,
                      marks=scope_marks(scope), exposure_hours=scope_exposure_hours(scope, rollup=rollup))
    return PerformanceSummary(
        label=scope.label, mode=scope.mode, combined=scope.combined, accounts=tuple(a.name for a in scope.accounts),
        start=scope.start, end=scope.end,
        total_trades=kpis.trades, wins=kpis.wins, losses=kpis.losses, win_rate=kpis.win_rate,
        profit_factor=kpis.profit_factor, realised_pnl=sum((r["pnl"] for r in rows), Decimal(0)),
        fees=sum((r["fees"] for r in rows), Decimal(0)), funding=sum((r["funding"] for r in rows), Decimal(0)),
        capital=capital, total_return=kpis.total_return,
        max_drawdown=kpis.max_drawdown, sharpe=kpis.sharpe, sortino=kpis.sortino, expectancy=kpis.expectancy,
        average_win=kpis.average_win, average_loss=kpis.average_loss,
        average_holding_hours=kpis.average_holding_hours, exposure=kpis.exposure,
        without_result=scope_trades(scope.accounts, scope.pair).filter(
            exit_reason=PairTrade.ExitReason.RECONCILED, realised_pnl__isnull=True, closed_at__gte=scope.start,
            closed_at__lt=scope.end).count(),
    )


def performance_summary(*, account: ExchangeAccount | None = None, **scope) -> PerformanceSummary:
    """The KPIs of one account, or of the accounts of one mode combined (see ``performance_scope``)."""
    return scope_performance(performance_scope(account=account, **scope))


def _scope_accounts(account: ExchangeAccount | None, mode: str | None, level: int | None
                    ) -> tuple[list[ExchangeAccount], str, str | None]:
    """The scope's accounts, its label and its mode (MixedModesError for accounts of several modes)."""
    if account is not None:
        return [account], f"{account.name} ({account.mode})", account.mode
    candidates = ExchangeAccount.objects.select_related("level").order_by("name")
    if mode:
        candidates = candidates.filter(mode=mode)
    if level is not None:
        candidates = candidates.filter(level__number=level)
    accounts = list(candidates)
    modes = sorted({a.mode for a in accounts})
    if len(modes) > 1:
        raise MixedModesError(
            f"the accounts in scope are {', '.join(modes)}: choose an account or a mode, a combined view never "
            "mixes paper with real money"
        )
    mode = modes[0] if modes else mode
    level_text = f" level {level}" if level is not None else ""
    return accounts, f"combined {mode or 'no'}{level_text} accounts: {', '.join(a.name for a in accounts) or 'none'}", \
        mode


def _default_end(accounts: list[ExchangeAccount], pair: Pair | None) -> datetime:
    """The market's clock: the wall clock live, the demo's stored-data clock in `make demo` (the period, the open
    trades' exposure and the monthly table end where the market the accounts trade on stands); for accounts that
    are all disabled, the end of their last active day."""
    end = market_clock().now()
    if accounts and not any(a.enabled for a in accounts):
        end = min(end, _after_last_activity(accounts, pair) or end)
    return end


def _after_last_activity(accounts: list[ExchangeAccount], pair: Pair | None) -> datetime | None:
    """The midnight after the last day on which the accounts opened or closed a trade or the guard measured them."""
    trades = scope_trades(accounts, pair)
    lasts = [trades.aggregate(last=Max(name))["last"] for name in ("opened_at", "closed_at")]
    day = DailyPnlSnapshot.objects.filter(account__in=accounts).aggregate(last=Max("date"))["last"]
    if day is not None:
        lasts.append(datetime.combine(day, datetime.min.time(), tzinfo=UTC))
    last = max((m for m in lasts if m is not None), default=None)
    if last is None:
        return None
    return datetime.combine(last.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


@dataclass(frozen=True)
class EquityPoint:
    at: datetime | None
    equity: float
    drawdown: float  # fall from the running peak, as a positive fraction of the peak


def _daily_curve(scope: Scope, rollup: bool = True) -> list[tuple[datetime | None, float]]:
    days = [DayTotals(day=r["day"], pnl=float(r["pnl"])) for r in scope_day_rows(scope, rollup=rollup)]
    return daily_curve(capital=float(_capital(scope)), days=days, marks=scope_marks(scope))


def scope_equity(scope: Scope, *, rollup: bool = True) -> list[EquityPoint]:
    """The daily equity curve the drawdown is measured on (``pairs.quant.kpis.daily_curve``), with the drawdown at
    each point. ``rollup`` as in ``scope_performance``."""
    points, peak = [], -math.inf
    for moment, value in _daily_curve(scope, rollup):
        peak = max(peak, value)
        points.append(EquityPoint(at=moment, equity=value, drawdown=(peak - value) / peak if peak > 0 else 0.0))
    return points


def scope_daily_pnl(scope: Scope) -> list[dict]:
    """Realised PnL, fees, funding and trades per UTC day of closing (aggregated in SQL)."""
    return [{name: row[name] for name in ("day", "pnl", "fees", "funding", "trades")}
            for row in scope_day_rows(scope)]


def scope_monthly_returns(scope: Scope) -> list[dict]:
    """Return of each calendar month (UTC): end-of-month equity over the previous month's end (the capital first)."""
    curve = _daily_curve(scope)
    last_day = (scope.end - timedelta(microseconds=1)).date()
    values = daily_equity(curve, scope.start.date(), last_day)
    months: dict[tuple[int, int], float] = {}
    day = scope.start.date()
    for value in values[1:]:
        months[(day.year, day.month)] = value
        day += timedelta(days=1)
    result, previous = [], values[0] if values else None
    for (year, month), value in months.items():
        result.append({"year": year, "month": month,
                       "return": value / previous - 1.0 if previous else None})
        previous = value
    return result


def scope_pnl_by(scope: Scope, field: str) -> list[dict]:
    """Realised PnL and trade count grouped by ``field`` ("pair" or "exit_reason"), biggest PnL first."""
    key = {"pair": "pair_id", "exit_reason": "exit_reason"}[field]
    rows = scope_closed_trades(scope).values(key).annotate(pnl=Sum("realised_pnl"), trades=Count("id"))
    rows = sorted(rows, key=lambda row: row["pnl"], reverse=True)
    if field == "pair":
        names = {p.pk: str(p) for p in Pair.objects.filter(pk__in=[r["pair_id"] for r in rows])
                 .select_related("y_instrument", "x_instrument")}
        for row in rows:
            row["name"] = names.get(row["pair_id"], str(row["pair_id"]))
    else:
        for row in rows:
            row["name"] = row["exit_reason"] or "none"
    return rows


def daily_pnl(*, account: ExchangeAccount | None = None) -> QuerySet[DailyPnlSnapshot]:
    snapshots = DailyPnlSnapshot.objects.select_related("account")
    return snapshots.filter(account=account) if account else snapshots


def account_summaries(*, start: datetime | None = None, end: datetime | None = None) -> list[PerformanceSummary]:
    """One summary per account, then one combined summary per mode that has more than one account."""
    accounts = list(ExchangeAccount.objects.select_related("level").order_by("name"))
    summaries = [performance_summary(account=a, start=start, end=end) for a in accounts]
    by_mode: dict[str, int] = defaultdict(int)
    for a in accounts:
        by_mode[a.mode] += 1
    summaries += [performance_summary(mode=mode, start=start, end=end) for mode, n in sorted(by_mode.items())
                  if n > 1]
    return summaries


def level_summaries(*, start: datetime | None = None, end: datetime | None = None) -> list[PerformanceSummary]:
    """One summary per level and mode that accounts trade (the accounts of that mode on that level combined, on
    the sum of their capitals), lowest level first."""
    keys = sorted(set(ExchangeAccount.objects.filter(level__isnull=False)
                      .values_list("level__number", "mode")))  # fmt: skip
    return [performance_summary(mode=mode, level=number, start=start, end=end) for number, mode in keys]
