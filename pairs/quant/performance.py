"""Trading performance metrics from a list of trade returns and an equity curve. Pure: no Django, no ccxt.

One definition serves the backtest statistics, the replay summary and the dashboard, so the three never
disagree about what a "profit factor" is.

Conventions
- win rate: trades with a result > 0 over all trades (a zero result is not a win);
- profit factor: gross profit / gross loss; +inf when there are wins and no losses, None with no trades;
- max drawdown: the largest fall from a running peak of equity, as a positive fraction of that peak;
- Sharpe and Sortino: mean over standard deviation (downside deviation) of per-period returns, times
  sqrt(periods_per_year); None when undefined (fewer than two periods, or zero dispersion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TradeMetrics:
    trades: int
    wins: int
    win_rate: float | None
    gross_profit: float
    gross_loss: float
    profit_factor: float | None
    total: float
    mean: float | None
    expectancy: float | None


def trade_metrics(results: Sequence[float] | np.ndarray) -> TradeMetrics:
    """Metrics of closed trades from their results (PnL or returns, one per trade)."""
    values = np.asarray(results, dtype=float)
    n = int(values.size)
    if n == 0:
        return TradeMetrics(0, 0, None, 0.0, 0.0, None, 0.0, None, None)
    wins = values[values > 0]
    losses = values[values < 0]
    gross_profit = float(wins.sum())
    gross_loss = float(-losses.sum())
    if gross_loss > 0:
        profit_factor: float | None = gross_profit / gross_loss
    else:
        profit_factor = math.inf if gross_profit > 0 else None
    win_rate = wins.size / n
    mean = float(values.mean())
    average_win = float(wins.mean()) if wins.size else 0.0
    average_loss = float(-losses.mean()) if losses.size else 0.0
    expectancy = win_rate * average_win - (losses.size / n) * average_loss
    return TradeMetrics(
        trades=n,
        wins=int(wins.size),
        win_rate=win_rate,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        profit_factor=profit_factor,
        total=float(values.sum()),
        mean=mean,
        expectancy=expectancy,
    )


def max_drawdown(equity: Sequence[float] | np.ndarray) -> float:
    """Largest peak-to-trough fall of an equity curve as a positive fraction of the peak (0 if none)."""
    curve = np.asarray(equity, dtype=float)
    if curve.size == 0:
        return 0.0
    peaks = np.maximum.accumulate(curve)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdowns = np.where(peaks > 0, (peaks - curve) / peaks, 0.0)
    return float(drawdowns.max())


def sharpe_ratio(period_returns: Sequence[float] | np.ndarray, periods_per_year: float) -> float | None:
    returns = np.asarray(period_returns, dtype=float)
    if returns.size < 2:
        return None
    std = returns.std(ddof=1)
    if not np.isfinite(std) or std == 0:
        return None
    return float(returns.mean() / std * math.sqrt(periods_per_year))


def sortino_ratio(period_returns: Sequence[float] | np.ndarray, periods_per_year: float) -> float | None:
    returns = np.asarray(period_returns, dtype=float)
    if returns.size < 2:
        return None
    downside = np.minimum(returns, 0.0)
    downside_deviation = math.sqrt(float((downside**2).mean()))
    if downside_deviation == 0:
        return None
    return float(returns.mean() / downside_deviation * math.sqrt(periods_per_year))


def equity_returns(equity: Sequence[float] | np.ndarray) -> np.ndarray:
    """Simple per-period returns of an equity curve."""
    curve = np.asarray(equity, dtype=float)
    if curve.size < 2:
        return np.empty(0)
    return curve[1:] / curve[:-1] - 1.0
