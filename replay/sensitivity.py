"""How much the replay's result owes to fast execution: the vectorised backtest of the pairs the replay traded, over
the replayed bars, with 0 and with 1 bar of execution delay.

The replay itself runs once, at the configuration's ``execution_delay_bars`` (or ``--execution-delay-bars``); running
the whole engine twice would double its cost, and the quantity a reader needs is the *difference* one bar of delay
makes, all else equal. So the report adds, for the same pairs, the same bars and the same settings, the vectorised
backtest (``pairs.quant.backtest``, the code that grades pairs) at each delay in ``SENSITIVITY_DELAYS``:

- every pair the replay opened a trade on, traded over the whole replayed range [start, end] (not only while the
  selection kept it active, which the vectorised backtest can't see), starting flat at ``start``;
- z-score and hedge ratio from the rolling fit over the ``zscore_window_bars`` bars before each bar, as the live
  signals compute them; the holding limit from the pair's half-life as stored at the end of the replay;
- fills, slippage, fees and funding by the execution model (``pairs.quant.fills``), as the replay's paper exchange
  charges them; a position still open at ``end`` is closed at its close (``end_of_data``).

Its figures are per trade, for a y-leg notional of 1 (a return is a fraction of the trade's gross notional
``1 + |beta|``): ``trades``, ``win_rate``, ``profit_factor`` (null without a loss), ``mean_return``,
``total_return`` (the sum of the trades' returns), for all the pairs together.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from core.formatting import iso as _iso
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Pair, StrategyConfig
from pairs.quant.backtest import BacktestResult, backtest
from pairs.quant.kpis import finite_or_none
from pairs.quant.performance import trade_metrics
from pairs.quant.spread_rule import max_holding_bars, rolling_zscore_pairs
from pairs.selectors import price_window
from pairs.services.evidence import costs, execution_matrices, funding_rate_matrix, rule_params

SENSITIVITY_DELAYS = (0, 1)


def pairs_backtest(*, config: StrategyConfig, pairs: list[Pair], start: datetime, end: datetime,
                   execution_delay_bars: int) -> tuple[list[Pair], BacktestResult, np.ndarray] | None:
    """The vectorised backtest of ``pairs`` over the bars with open time in [start, end] (module docstring):
    (the pairs backtested, in the result's column order; the result; the bars' open times in epoch ms), or None when
    no pair has both legs on the whole window."""
    legs = {p.y_instrument_id: p.y_instrument for p in pairs} | {p.x_instrument_id: p.x_instrument for p in pairs}
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    n_bars = (end - start) // step + 1
    z_window = config.zscore_window_bars
    window = price_window(instruments=list(legs.values()), timeframe=config.timeframe, bars=n_bars + z_window,
                          end=end, min_history_bars=None)
    column = {iid: k for k, iid in enumerate(window.instrument_ids)}
    tested = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column]
    if not tested or n_bars < 2:
        return None
    y = np.array([column[p.y_instrument_id] for p in tested])
    x = np.array([column[p.x_instrument_id] for p in tested])
    rolling = rolling_zscore_pairs(np.log(window.closes), y, x, z_window)
    traded = slice(z_window, None)
    opens, slippage = (matrix[traded] for matrix in execution_matrices(config, window))
    funding = funding_rate_matrix(window)[traded]
    params = rule_params(config)
    holding = max_holding_bars(np.array([p.half_life_bars or np.nan for p in tested], dtype=float), params)
    closes = window.closes[traded]
    times = window.times[traded].as_unit("ms").asi8
    result = backtest(closes[:, y], closes[:, x], rolling.zscore[traded], rolling.hedge_ratio[traded], params,
                      costs(config), times, funding[:, y], funding[:, x], max_holding_bars=holding,
                      opens_y=opens[:, y], opens_x=opens[:, x], slippage_y=slippage[:, y], slippage_x=slippage[:, x],
                      execution_delay_bars=execution_delay_bars)
    return tested, result, times


def delay_sensitivity(*, config: StrategyConfig, pairs: list[Pair], start: datetime, end: datetime,
                      replay_delay_bars: int) -> dict:
    """The report's ``execution_delay`` section (module docstring): the replay's own delay, the window, the pairs,
    and the backtest's figures at each delay of ``SENSITIVITY_DELAYS`` (keyed by the delay, as a string)."""
    section = {"replay_delay_bars": replay_delay_bars, "start": _iso(start), "end": _iso(end),
               "pairs": [], "backtest": {}}
    for delay in SENSITIVITY_DELAYS:
        run = pairs_backtest(config=config, pairs=pairs, start=start, end=end, execution_delay_bars=delay) \
            if pairs else None
        returns = np.empty(0) if run is None else run[1].trades.ret
        if run is not None:
            section["pairs"] = [f"{p.y_instrument.symbol}/{p.x_instrument.symbol}" for p in run[0]]
        metrics = trade_metrics(returns)
        section["backtest"][str(delay)] = {
            "trades": metrics.trades,
            "win_rate": metrics.win_rate,
            "profit_factor": finite_or_none(metrics.profit_factor),
            "mean_return": metrics.mean,
            "total_return": metrics.total,
        }
    return section
