"""The KPIs of a trading account over a period, from its finished trades and its mark-to-market points. Pure: no
Django, no ccxt. The replay summary calls ``account_kpis`` with its trades and its per-bar curve; the dashboard,
the API and the performance report call ``daily_kpis`` with the same figures summed per UTC day by the database
(``DayTotals``), so a million trades never travel to Python (README, "Performance figures").

Definitions (money in the account's currency, ratios as fractions):
- trades: finished trades with a result (closed, or unwound after a failed leg); a win is a PnL > 0;
- win rate = wins / trades; profit factor = gross profit / gross loss (+inf with wins and no loss, None without
  trades); expectancy = mean PnL per trade; average win / loss = mean of the positive / negative PnLs;
- net PnL = sum of the trades' realised PnL, which is already net of fees and funding; fees and funding are the
  sums of the trades' columns (funding received +, paid -);
- return = net PnL / capital;
- equity curve: the capital at the period's start, then, in time order, the equity at each mark-to-market point
  (capital + realised PnL so far + the unrealised PnL of what was open then) and after each finished trade
  (capital + realised PnL so far); where marks exist, a trade's close is a point only when nothing else was open
  (the realised equity would leave out the others' unrealised PnL); a trade closing with a mark counts before it;
- max drawdown: the largest fall of that curve from its running peak, as a positive fraction of the peak;
- daily equity curve (``daily_curve``, what ``daily_kpis`` measures the drawdown on): the capital, then the equity at
  the end of every UTC day with a close or a mark: capital + realised PnL up to that day's end + that day's mark;
- Sharpe and Sortino: daily returns of the end-of-day equity (every UTC day of the period, a quiet day keeping the
  previous equity), mean over standard deviation (Sortino: over the downside deviation), times sqrt(365);
- average holding time: mean of closed_at - opened_at over the trades that have both, in hours;
- exposure: the fraction of the period during which at least one trade was open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from pairs.quant.performance import max_drawdown, sharpe_ratio, sortino_ratio, trade_metrics

DAYS_PER_YEAR = 365  # crypto trades every day


@dataclass(frozen=True)
class TradeResult:
    """One finished trade: its realised PnL (net of fees and funding), its fees and funding, and when it was held."""

    pnl: float
    closed_at: datetime
    opened_at: datetime | None = None
    fees: float = 0.0
    funding: float = 0.0


@dataclass(frozen=True)
class Kpis:
    trades: int
    wins: int
    losses: int
    win_rate: float | None
    profit_factor: float | None
    gross_profit: float
    gross_loss: float
    net_pnl: float
    fees: float
    funding: float
    expectancy: float | None
    average_win: float | None
    average_loss: float | None
    capital: float
    total_return: float | None
    max_drawdown: float | None
    sharpe: float | None
    sortino: float | None
    average_holding_hours: float | None
    exposure: float | None


def equity_curve(*, capital: float, trades: Sequence[TradeResult], marks: Sequence[tuple[datetime, float]] = (),
                 open_since: Sequence[datetime] = ()) -> list[tuple[datetime | None, float]]:
    """The equity curve described in the module docstring: ``(moment, equity)``, the first moment None (the capital
    before anything happened). ``marks`` are ``(moment, unrealised PnL)``.

    With marks, a trade's close is a point of the curve only when no other trade was open then (otherwise the
    realised equity leaves out the others' unrealised PnL, and a paper gain would show as a drawdown); without
    marks the realised equity after every close is all there is.
    """
    flat_closes = _closes_when_flat(trades, open_since) if marks else None
    events = sorted(
        [(t.closed_at, 0, t.pnl, i) for i, t in enumerate(trades)]
        + [(moment, 1, unrealised, -1) for moment, unrealised in marks],
        key=lambda event: (event[0], event[1]),
    )
    curve: list[tuple[datetime | None, float]] = [(None, capital)]
    realised = 0.0
    for moment, kind, value, index in events:
        if kind == 0:
            realised += value
            if flat_closes is None or index in flat_closes:
                curve.append((moment, capital + realised))
        else:
            curve.append((moment, capital + realised + value))
    return curve


def _closes_when_flat(trades: Sequence[TradeResult], open_since: Sequence[datetime]) -> set[int]:
    """Indexes of the trades after whose close (and every close at the same moment) no trade was open."""
    changes = [(t.opened_at or t.closed_at, 1, -1) for t in trades] + [(m, 1, -1) for m in open_since]
    changes += [(t.closed_at, -1, i) for i, t in enumerate(trades)]
    # At one moment closes count before opens: a trade opened as another closes leaves the book open.
    changes.sort(key=lambda change: (change[0], change[1]))
    flat, open_count, pending, current = set(), 0, [], None
    for moment, step, index in changes:
        if moment != current:
            if open_count == 0:
                flat.update(pending)
            pending, current = [], moment
        open_count += step
        if step == -1:
            pending.append(index)
    if open_count == 0:
        flat.update(pending)
    return flat


def daily_equity(curve: Sequence[tuple[datetime | None, float]], first_day: date, last_day: date) -> list[float]:
    """The equity at the end of every UTC day from ``first_day`` to ``last_day``, starting from the curve's first
    value; a day without a point keeps the previous day's equity."""
    if last_day < first_day:
        return []
    closing: dict[date, float] = {}
    opening = curve[0][1] if curve else 0.0
    for moment, value in curve:
        if moment is None:
            continue
        day = moment.date()
        if day < first_day:
            opening = value
        elif day <= last_day:
            closing[day] = value
    values = [opening]
    day = first_day
    while day <= last_day:
        values.append(closing.get(day, values[-1]))
        day += timedelta(days=1)
    return values


def exposure(intervals: Sequence[tuple[datetime, datetime]], start: datetime, end: datetime) -> float | None:
    """The fraction of [start, end) covered by at least one of ``intervals`` (None for an empty period)."""
    span = (end - start).total_seconds()
    if span <= 0:
        return None
    return union_length([((a - start).total_seconds(), (b - start).total_seconds()) for a, b in intervals],
                        0.0, span) / span


def union_length(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """The length of [start, end) covered by at least one of ``intervals`` (numbers: seconds, microseconds...)."""
    covered = 0.0
    current_start = current_end = None
    for opened, closed in sorted((max(a, start), min(b, end)) for a, b in intervals):
        if closed <= opened:
            continue
        if current_end is None or opened > current_end:
            if current_end is not None:
                covered += current_end - current_start
            current_start, current_end = opened, closed
        else:
            current_end = max(current_end, closed)
    if current_end is not None:
        covered += current_end - current_start
    return covered


def account_kpis(*, capital: float, trades: Sequence[TradeResult], start: datetime, end: datetime,
                 marks: Sequence[tuple[datetime, float]] = (),
                 open_since: Sequence[datetime] = ()) -> Kpis:
    """Every KPI of one account (or of accounts of one mode, combined) over [start, end).

    ``trades`` are the trades finished in the period, ``marks`` the mark-to-market points in it, ``open_since`` the
    opening times of trades still open at ``end`` (they count for exposure only).
    """
    pnls = [t.pnl for t in trades]
    metrics = trade_metrics(pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    net = float(sum(pnls))
    curve = equity_curve(capital=capital, trades=trades, marks=marks, open_since=open_since)
    curve_figures = curve_kpis(curve, start, end)
    holding = [(t.closed_at - t.opened_at).total_seconds() / 3600 for t in trades if t.opened_at is not None]
    intervals = [(t.opened_at, t.closed_at) for t in trades if t.opened_at is not None]
    intervals += [(opened, end) for opened in open_since]
    return Kpis(
        trades=metrics.trades,
        wins=len(wins),
        losses=len(losses),
        win_rate=metrics.win_rate,
        profit_factor=metrics.profit_factor,
        gross_profit=metrics.gross_profit,
        gross_loss=metrics.gross_loss,
        net_pnl=net,
        fees=float(sum(t.fees for t in trades)),
        funding=float(sum(t.funding for t in trades)),
        expectancy=metrics.mean,
        average_win=sum(wins) / len(wins) if wins else None,
        average_loss=sum(losses) / len(losses) if losses else None,
        capital=capital,
        total_return=net / capital if capital > 0 else None,
        max_drawdown=curve_figures["max_drawdown"] if capital > 0 else None,
        sharpe=curve_figures["sharpe"],
        sortino=curve_figures["sortino"],
        average_holding_hours=sum(holding) / len(holding) if holding else None,
        exposure=exposure(intervals, start, end),
    )


def curve_kpis(curve: Sequence[tuple[datetime | None, float]], start: datetime, end: datetime) -> dict:
    """Max drawdown (a positive fraction), Sharpe and Sortino of an equity curve over [start, end): the part of
    the KPIs that needs only the curve (the replay passes its per-bar equity)."""
    returns_daily = _daily_returns(curve, start, end)
    return {
        "max_drawdown": max_drawdown([value for _, value in curve]),
        "sharpe": sharpe_ratio(returns_daily, DAYS_PER_YEAR),
        "sortino": sortino_ratio(returns_daily, DAYS_PER_YEAR),
    }


def _daily_returns(curve: Sequence[tuple[datetime | None, float]], start: datetime, end: datetime) -> list[float]:
    last_moment = end - timedelta(microseconds=1)
    values = daily_equity(curve, start.date(), last_moment.date())
    return [b / a - 1.0 for a, b in pairwise(values) if a > 0]


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded profit factor travels as null (with a flag beside it)."""
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class DayTotals:
    """The finished trades of one UTC day of closing, summed: what ``daily_kpis`` needs instead of the trades."""

    day: date
    trades: int = 0
    wins: int = 0
    losses: int = 0
    gross_profit: float = 0.0  # sum of the positive PnLs
    gross_loss: float = 0.0  # sum of the negative PnLs (<= 0)
    pnl: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    held_hours: float = 0.0  # sum of closed - opened over the trades that have an opening time
    held_trades: int = 0


def day_end(day: date) -> datetime:
    """The last moment of a UTC day: where a day's point of the daily curve sits."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(microseconds=1)


def daily_curve(*, capital: float, days: Sequence[DayTotals],
                marks: Mapping[date, float] | None = None) -> list[tuple[datetime | None, float]]:
    """The daily equity curve of the module docstring, ``(moment, equity)`` like ``equity_curve``: the capital (moment
    None), then the end of each day with a close or a mark (``marks``: unrealised PnL at a day's end)."""
    marks = marks or {}
    pnl_by_day = {d.day: d.pnl for d in days}
    curve: list[tuple[datetime | None, float]] = [(None, capital)]
    realised = 0.0
    for day in sorted(set(pnl_by_day) | set(marks)):
        realised += pnl_by_day.get(day, 0.0)
        curve.append((day_end(day), capital + realised + marks.get(day, 0.0)))
    return curve


def daily_kpis(*, capital: float, days: Sequence[DayTotals], start: datetime, end: datetime,
               marks: Mapping[date, float] | None = None,
               exposure_hours: float = 0.0) -> Kpis:
    """Every KPI of one account (or of accounts of one mode, combined) over [start, end), from the day totals of the
    trades finished in the period, the marks (unrealised PnL at a day's end) and the hours during which at least one
    trade was open (the union of their holding intervals, clipped to the period). The trade figures are those of
    ``account_kpis``; drawdown, Sharpe and Sortino are measured on ``daily_curve``."""
    total = {name: sum(getattr(d, name) for d in days) for name in (
        "trades", "wins", "losses", "gross_profit", "gross_loss", "pnl", "fees", "funding", "held_hours",
        "held_trades")}
    trades, wins, losses, net = total["trades"], total["wins"], total["losses"], total["pnl"]
    gross_profit, gross_loss = total["gross_profit"], -total["gross_loss"]
    if gross_loss > 0:
        profit_factor: float | None = gross_profit / gross_loss
    else:
        profit_factor = math.inf if gross_profit > 0 else None
    curve_figures = curve_kpis(daily_curve(capital=capital, days=days, marks=marks), start, end)
    span_hours = (end - start).total_seconds() / 3600
    return Kpis(
        trades=trades, wins=wins, losses=losses, win_rate=_share(wins, trades), profit_factor=profit_factor,
        gross_profit=gross_profit, gross_loss=gross_loss, net_pnl=net, fees=total["fees"], funding=total["funding"],
        expectancy=_share(net, trades), average_win=_share(gross_profit, wins),
        average_loss=_share(-gross_loss, losses), capital=capital,
        total_return=net / capital if capital > 0 else None,
        max_drawdown=curve_figures["max_drawdown"] if capital > 0 else None,
        sharpe=curve_figures["sharpe"], sortino=curve_figures["sortino"],
        average_holding_hours=_share(total["held_hours"], total["held_trades"]),
        exposure=min(exposure_hours / span_hours, 1.0) if span_hours > 0 else None,
    )


def _share(amount: float, count: float) -> float | None:
    """``amount / count``, None when ``count`` is 0 (a mean of nothing)."""
    return amount / count if count else None
