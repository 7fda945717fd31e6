"""The price grid: a universe's closes on the regular bars of a timeframe, with one set of exclusion rules.

Pure (numpy and pandas). The database read (``pairs.selectors.price_window``) and the replay's history in memory
(``replay.market.ReplayMarket``) both build a (bars x instruments) block with NaN where a bar is missing and hand it
to ``grid_window``, so screening, grading, signals and the replay exclude and fill symbols by the same rules:

- a missing bar (exchange maintenance) is forward-filled from the previous close when the gap is at most
  ``MAX_FORWARD_FILL_BARS`` long;
- a symbol is left out, with the reason recorded, when it has no bar in the window, no bar at the window's start
  (listed later: short history), too little history before the window (``history_ok``), a longer gap, or more bars
  missing than ``MAX_FILLED_FRACTION`` of the window (at least ``MAX_FORWARD_FILL_BARS`` are tolerated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# A gap longer than this many bars is not papered over: the symbol is left out of the window.
MAX_FORWARD_FILL_BARS = 6
# Nor a symbol with more of its window filled in than this share (or than MAX_FORWARD_FILL_BARS, for short
# windows): many small gaps mean a thin market, not exchange maintenance.
MAX_FILLED_FRACTION = 0.02


@dataclass
class PriceWindow:
    """Close prices of a universe on a common grid: ``closes`` is (bars x symbols), float64, no NaN."""

    timeframe: str
    times: pd.DatetimeIndex
    symbols: list[str]
    instrument_ids: list[int]
    closes: np.ndarray
    excluded: dict[str, str] = field(default_factory=dict)  # symbol -> why it was left out
    filled_bars: dict[str, int] = field(default_factory=dict)  # symbol -> bars forward-filled


def empty_window(timeframe: str) -> PriceWindow:
    return PriceWindow(timeframe=timeframe, times=pd.DatetimeIndex([], tz="UTC"), symbols=[], instrument_ids=[],
                       closes=np.empty((0, 0)))


def grid_window(
    *, timeframe: str, times: pd.DatetimeIndex, block: np.ndarray, symbols: Sequence[str],
    instrument_ids: Sequence[int], short_history: Sequence[str | None] | None = None,
) -> PriceWindow:
    """The window of ``block`` (bars x instruments, NaN where a bar is missing; columns in ``symbols`` order, which
    the window keeps) after the grid rules of the module docstring. ``short_history[k]``: the reason instrument k
    lacks history before the window (None when it has enough), checked after the window-start rule."""
    bars = len(times)
    real = ~np.isnan(block)
    filled = block if real.all() else pd.DataFrame(block).ffill(limit=MAX_FORWARD_FILL_BARS).to_numpy()
    window = PriceWindow(timeframe=timeframe, times=times, symbols=[], instrument_ids=[], closes=np.empty((0, 0)))
    keep = []
    # Column by column below, but counted for all columns at once (a replay calls this every bar).
    reals, starts, gaps = real.sum(axis=0).tolist(), real[0].tolist(), np.isnan(filled).any(axis=0).tolist()
    for k, symbol in enumerate(symbols):
        reason = _exclusion(bars, reals[k], starts[k], gaps[k], short_history[k] if short_history else None)
        if reason is not None:
            window.excluded[symbol] = reason
            continue
        if reals[k] < bars:
            window.filled_bars[symbol] = bars - reals[k]
        keep.append(k)
        window.symbols.append(symbol)
        window.instrument_ids.append(int(instrument_ids[k]))
    window.closes = filled[:, keep] if keep else np.empty((bars, 0))
    return window


def _exclusion(bars: int, n_real: int, starts: bool, gap: bool, short_history: str | None) -> str | None:
    if n_real == 0:
        return "no candles in the window"
    if not starts:
        return "short history: no bar at the window start"
    if short_history is not None:
        return short_history
    if gap:
        return f"a gap longer than {MAX_FORWARD_FILL_BARS} bars"
    if bars - n_real > max(MAX_FORWARD_FILL_BARS, MAX_FILLED_FRACTION * bars):
        return f"{bars - n_real} of {bars} bars missing in the window"
    return None
