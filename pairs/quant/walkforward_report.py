"""Statistics of a walk-forward run (``pairs.quant.walkforward``): per period and overall, for the pool and each
level; over a parameter grid, the nested (forward) selection and the probability of backtest overfitting.

Definitions (all from net trade returns of ``backtest.backtest``, one unit of y notional per trade):

- ``trades``, ``win_rate``, ``profit_factor``: ``performance.trade_metrics`` of the trades CLOSED in the span;
  ``profit_factor_ci``: ``evaluation.bootstrap_profit_factor_ci`` (2,000 resamples, 95 %, seed 0).
- daily returns: the sum of the returns of the trades closed on each UTC day of the span (the day of the exit
  fill, ``exit_ms - 1``: the close of the exit's reference bar), 0 on days without a close. ``sharpe`` = their
  mean over standard deviation times sqrt(365); ``deflated_sharpe`` = ``evaluation.deflated_sharpe_ratio`` of
  the same daily returns, the selection being the grid: the per-day Sharpe ratios of every distinct grid point
  over the same span and group are the trials (one point, or fewer than two defined Sharpe ratios: SR0 = 0, i.e.
  the probabilistic Sharpe ratio against zero). None when fewer than ``MIN_DEFLATED_SHARPE_DAYS`` (30) days have a
  closed trade: the days without one are zeros, and a series of a few non-zero days among zeros has a skewness and
  kurtosis for which the PSR's normal approximation (Mertens' standard error) fails. Measured on 47 days of
  zero-mean trades (t(4) returns, one trade a day on k random days, no edge at all): the PSR exceeds 0.95 on 27 %
  of the samples with k = 2, 12 % with k = 9, 7.5 % with k = 30, against the 5 % it claims (0.99: 20 %, 6 %, 2.6
  %). Two winning trades printed 0.996, "99.6 % that the Sharpe ratio is positive", from two trades.
- distinct points (``distinct_points``): grid points whose trades are identical in every period (returns, exit
  times, levels) are one trial, not several: a grid value that changes nothing (``max_pvalue`` 0.01 and 0.05 when
  the q-value limit binds) would otherwise count twice in the deflated Sharpe ratio and put exact twins into the
  PBO's ranks. Both use the first point of each group only; ``overall.nested.points[p].same_as`` names it.
- levels: trades of the pairs graded exactly to that level in their period (``walkforward.level_numbers``).
- nested selection (with a grid): period k is traded with the point whose chosen book (``select_on``: the level
  trades, or the whole pool) had the highest total return over periods 0..k-1; ties, and period 0 (no evidence
  yet), go to the first point (the current settings). The periods and the overall statistics of a grid run are
  this nested result; ``overall.nested`` says which point traded each period (``choices``) and gives every
  point's own statistics over the whole run (``points``: chosen with hindsight, for comparison only), and
  ``next_choice``, the point the rule picks on all the periods (to trade next: the default the evidence supports).
- ``pbo``: ``evaluation.probability_of_backtest_overfitting`` of the (days x points) matrix of daily returns of
  the chosen book over the whole run, one column per distinct point, S = the largest even number of blocks up to
  16 that leaves each half at least 2 days; None when there are fewer than 2 distinct points or 4 days. The blocks
  are days // S days long: the oldest days % S days are left out, and ``pbo_detail`` says how many
  (``dropped_days``) and which day is the first used (``first_day``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pairs.quant.evaluation import (
    bootstrap_profit_factor_ci,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
)
from pairs.quant.performance import sharpe_ratio, trade_metrics
from pairs.quant.walkforward import MS_PER_DAY, PeriodTrades

DAYS_PER_YEAR = 365
# Fewest days with a closed trade for a deflated (probabilistic) Sharpe ratio; see the module docstring.
MIN_DEFLATED_SHARPE_DAYS = 30
SELECT_ON = ("levels", "pool")
MAX_PBO_SPLITS = 16


def _finite(value: float | None) -> float | None:
    """JSON has no infinity or NaN: None for undefined values and for an unbounded profit factor (no losses)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def daily_returns(ret: np.ndarray, exit_ms: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """Sum of trade returns per UTC day of [start_ms, end_ms), by the day of each exit bar's close."""
    first_day, last_day = start_ms // MS_PER_DAY, (end_ms - 1) // MS_PER_DAY
    days = (np.asarray(exit_ms, dtype=np.int64) - 1) // MS_PER_DAY - first_day
    n_days = int(last_day - first_day + 1)
    inside = (days >= 0) & (days < n_days)
    return np.bincount(days[inside], weights=np.asarray(ret, dtype=float)[inside], minlength=n_days)


def per_period_sharpe(daily: np.ndarray) -> float:
    value = sharpe_ratio(daily, 1.0)
    return math.nan if value is None else value


def statistics(ret: np.ndarray, daily: np.ndarray, trial_sharpes: Sequence[float] = ()) -> dict:
    """The statistics object of the report (see the module docstring)."""
    metrics = trade_metrics(ret)
    low, high = bootstrap_profit_factor_ci(ret) if len(ret) >= 2 else (None, None)
    trials = [s for s in trial_sharpes if math.isfinite(s)]
    if np.count_nonzero(daily) < MIN_DEFLATED_SHARPE_DAYS:
        deflated = None
    elif len(trials) >= 2:
        deflated = deflated_sharpe_ratio(daily, trial_sharpes=trials, n_trials=len(trial_sharpes))
    else:
        deflated = deflated_sharpe_ratio(daily, n_trials=max(1, len(trial_sharpes)), sr_variance=0.0)
    return {
        "trades": metrics.trades,
        "win_rate": _finite(metrics.win_rate),
        "profit_factor": _finite(metrics.profit_factor),
        "profit_factor_ci": [_finite(low), _finite(high)],
        "sharpe": _finite(sharpe_ratio(daily, DAYS_PER_YEAR)),
        "deflated_sharpe": _finite(deflated),
    }


def _groups(result: PeriodTrades, levels: list[int]) -> dict[str, np.ndarray]:
    """Trade masks: "pool" (every trade), each level number, and "book" (every level listed, for selection)."""
    trade_level = result.trade_level()
    masks = {"pool": np.ones(len(result.ret), dtype=bool), "book": np.isin(trade_level, levels)}
    for number in levels:
        masks[str(number)] = trade_level == number
    return masks


class _Book:
    """Trades of chosen (point, period) results, gathered per group."""

    def __init__(self, levels: list[int]):
        self.levels = levels
        self.ret: dict[str, list[np.ndarray]] = {}
        self.exit_ms: dict[str, list[np.ndarray]] = {}

    def add(self, result: PeriodTrades) -> None:
        for name, mask in _groups(result, self.levels).items():
            self.ret.setdefault(name, []).append(result.ret[mask])
            self.exit_ms.setdefault(name, []).append(result.exit_ms[mask])

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        ret, exit_ms = self.ret.get(name, []), self.exit_ms.get(name, [])
        return (np.concatenate(ret) if ret else np.zeros(0),
                np.concatenate(exit_ms) if exit_ms else np.zeros(0, dtype=np.int64))


def _span(results: list[PeriodTrades], times_ms: np.ndarray, bar_ms: int) -> tuple[int, int]:
    return int(times_ms[results[0].period.trade_start]), int(times_ms[results[-1].period.trade_end - 1]) + bar_ms


def _stats_of_books(books: list[_Book], chosen: _Book, levels: list[int], start_ms: int, end_ms: int) -> dict:
    """Pool and level statistics of ``chosen``, deflated by the same groups of every book in ``books``."""
    out = {}
    for name in ("pool", *map(str, levels)):
        ret, exit_ms = chosen.arrays(name)
        daily = daily_returns(ret, exit_ms, start_ms, end_ms)
        trials = [per_period_sharpe(daily_returns(*book.arrays(name), start_ms, end_ms)) for book in books] \
            if len(books) > 1 else []
        out[name] = statistics(ret, daily, trials)
    return {"pool": out["pool"], "levels": {str(n): out[str(n)] for n in levels}}


def distinct_points(results: list[list[PeriodTrades]]) -> list[int]:
    """For each point, the index of the first point whose trades are identical in every period (itself if none
    is): same returns, exit times and levels, period by period."""
    first: dict[tuple, int] = {}
    same_as = []
    for p, per_period in enumerate(results):
        key = tuple((r.ret.tobytes(), np.asarray(r.exit_ms, dtype=np.int64).tobytes(), r.trade_level().tobytes())
                    for r in per_period)
        same_as.append(first.setdefault(key, p))
    return same_as


def nested_choices(results: list[list[PeriodTrades]], levels: list[int], select_on: str) -> list[int]:
    """Point index trading each period: the best total return of the ``select_on`` book on earlier periods; one
    more entry at the end, the point chosen on all periods (what the rule would trade next: the evidence-based
    default)."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}")
    group = "book" if select_on == "levels" else "pool"
    totals = np.zeros(len(results))
    choices = []
    for k in range(len(results[0])):
        choices.append(int(np.argmax(totals)))  # the first maximum: ties and period 0 go to the first point
        for p, per_period in enumerate(results):
            totals[p] += float(per_period[k].ret[_groups(per_period[k], levels)[group]].sum())
    choices.append(int(np.argmax(totals)))
    return choices


def pbo_of(results: list[list[PeriodTrades]], levels: list[int], select_on: str, times_ms: np.ndarray,
           bar_ms: int) -> dict | None:
    """CSCV over the daily returns of the chosen book of every distinct point (``distinct_points``), or None
    (fewer than 2 distinct points or 4 days)."""
    same_as = distinct_points(results)
    results = [per_period for p, per_period in enumerate(results) if same_as[p] == p]
    if len(results) < 2:
        return None
    group = "book" if select_on == "levels" else "pool"
    start_ms, end_ms = _span(results[0], times_ms, bar_ms)
    columns = []
    for per_period in results:
        book = _Book(levels)
        for result in per_period:
            book.add(result)
        columns.append(daily_returns(*book.arrays(group), start_ms, end_ms))
    matrix = np.column_stack(columns)
    n_days = matrix.shape[0]
    splits = next((s for s in range(MAX_PBO_SPLITS, 1, -2) if s <= n_days and (n_days // s) * (s // 2) >= 2), None)
    if splits is None:
        return None
    outcome = probability_of_backtest_overfitting(matrix, n_splits=splits)
    return {"pbo": outcome.pbo, "n_splits": splits, "n_combinations": outcome.n_combinations,
            "probability_of_loss": outcome.probability_of_loss, "book": select_on, "points": len(results),
            "days": n_days, "block_days": outcome.block_size, "dropped_days": outcome.dropped_rows,
            "first_day": _iso(start_ms + outcome.dropped_rows * MS_PER_DAY)[:10]}


def report(results: list[list[PeriodTrades]], levels: list[int], times_ms: np.ndarray, bar_ms: int, *,
           select_on: str = "levels", points: list[dict] | None = None) -> dict:
    """The walk-forward JSON (module docstring). ``results`` is ``[point][period]``; one point without a grid."""
    n_periods = len(results[0])
    grid = len(results) > 1
    same_as = distinct_points(results)
    distinct = [p for p, first in enumerate(same_as) if first == p]
    choices = nested_choices(results, levels, select_on) if grid else [0] * (n_periods + 1)
    next_choice = choices.pop()
    period_rows = []
    chosen_all = _Book(levels)
    all_books = [_Book(levels) for _ in results]
    for k in range(n_periods):
        period = results[choices[k]][k]
        start_ms, end_ms = _span([period], times_ms, bar_ms)
        chosen = _Book(levels)
        chosen.add(period)
        chosen_all.add(period)
        books = []
        for p, per_period in enumerate(results):
            book = _Book(levels)
            book.add(per_period[k])
            all_books[p].add(per_period[k])
            books.append(book)
        row = {
            "formation_start": _iso(times_ms[period.period.formation_start]),
            "trade_start": _iso(times_ms[period.period.trade_start]),
            "trade_end": _iso(times_ms[period.period.trade_end - 1] + bar_ms),
            **_stats_of_books([books[p] for p in distinct], chosen, levels, start_ms, end_ms),
        }
        period_rows.append(row)
    start_ms, end_ms = _span(results[0], times_ms, bar_ms)
    trial_books = [all_books[p] for p in distinct]
    overall = _stats_of_books(trial_books, chosen_all, levels, start_ms, end_ms)
    if grid:
        detail = pbo_of(results, levels, select_on, times_ms, bar_ms)
        overall["pbo"] = None if detail is None else detail["pbo"]
        overall["nested"] = {"select_on": select_on, "choices": choices, "next_choice": next_choice,
                             "distinct_points": len(distinct), "pbo_detail": detail, "points": [
            {"parameters": (points or [{}] * len(results))[p], "same_as": None if same_as[p] == p else same_as[p],
             **_stats_of_books(trial_books, book, levels, start_ms, end_ms)}
            for p, book in enumerate(all_books)
        ]}
    return {"periods": period_rows, "overall": overall}


def _iso(ms) -> str:
    return np.datetime64(int(ms), "ms").astype("datetime64[s]").item().strftime("%Y-%m-%dT%H:%M:%SZ")
