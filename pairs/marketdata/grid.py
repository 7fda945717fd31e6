"""The price grid: a universe's closes on the regular bars of a timeframe, with one set of exclusion rules.

Pure numpy (pandas only when a consumer asks for the window's ``times`` as a ``DatetimeIndex``: a screening run
never does, and importing pandas was a tenth of a 100-symbol ``select_pairs``, #18). The database read
(``pairs.selectors.price_window``) and the replay's history in memory (``replay.market.ReplayMarket``) both build a
(bars x instruments) block with NaN where a bar is missing and hand it to ``grid_window``, so screening, grading,
signals and the replay exclude and fill symbols by the same rules:

- a missing bar (exchange maintenance) is forward-filled from the previous close when the gap is at most
  ``MAX_FORWARD_FILL_BARS`` long;
- a window whose first bars fall in such a gap is filled from the ``MAX_FORWARD_FILL_BARS`` bars before it (the
  ``lead`` both reads hand over), as the same bars are filled inside a longer window: where the window starts must
  not decide whether a symbol is in it (a window starting in an exchange-wide gap left every symbol out, and the
  live signals, whose window start stays put until the pairs advance, stopped for a week);
- a symbol is left out, with the reason recorded, when it has no bar in the window, no bar at the window's start
  nor in the lead to fill it from (listed later: short history), too little history before the window
  (``history_ok``), a longer gap, or more bars missing than ``MAX_FILLED_FRACTION`` of the window (at least
  ``MAX_FORWARD_FILL_BARS`` are tolerated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# A gap longer than this many bars is not papered over: the symbol is left out of the window.
MAX_FORWARD_FILL_BARS = 6
# The bars before a window that its first bars may be forward-filled from (``grid_window``'s ``lead``).
LEAD_BARS = MAX_FORWARD_FILL_BARS
# Nor a symbol with more of its window filled in than this share (or than MAX_FORWARD_FILL_BARS, for short
# windows): many small gaps mean a thin market, not exchange maintenance.
MAX_FILLED_FRACTION = 0.02


@dataclass(frozen=True)
class BarGrid:
    """Regular bars as numbers: the first bar's open time (seconds since 1970, UTC), the step in seconds and how many
    bars. What a window's ``times`` is until someone asks for the ``DatetimeIndex`` (``PriceWindow.times``)."""

    first_s: int
    step_s: int
    bars: int

    @classmethod
    def ending(cls, end: datetime, *, step_s: int, bars: int) -> BarGrid:
        """``bars`` bars of ``step_s`` seconds whose last one opens at ``end`` (a naive ``end`` is UTC)."""
        end = end if end.tzinfo is not None else end.replace(tzinfo=UTC)
        whole = end.replace(microsecond=0)
        if whole != end or int(whole.timestamp()) != whole.timestamp():
            raise ValueError(f"a bar's open time is a whole second, got {end.isoformat()}")
        return cls(first_s=int(whole.timestamp()) - step_s * (bars - 1), step_s=step_s, bars=bars)

    def __len__(self) -> int:
        return self.bars

    def time(self, row: int) -> datetime:
        """Open time (aware, UTC) of bar ``row`` (negative: from the end)."""
        if not -self.bars <= row < self.bars:
            raise IndexError(f"bar {row} of {self.bars}")
        return datetime.fromtimestamp(self.first_s + self.step_s * (row % self.bars), tz=UTC)

    def index(self) -> pd.DatetimeIndex:
        import pandas as pd

        if not self.bars:
            return pd.DatetimeIndex([], tz="UTC")
        # As the grid was built before (pairs.selectors.price_window): same unit, same freq.
        return pd.date_range(end=pd.Timestamp(self.time(-1)), periods=self.bars,
                             freq=pd.Timedelta(seconds=self.step_s))


class PriceWindow:
    """Close prices of a universe on a common grid: ``closes`` is (bars x symbols), float64, no NaN.

    ``times`` (the bars' open times, a UTC ``DatetimeIndex``) may be given as a ``BarGrid``: it is then built, and
    pandas imported, on first use only; ``bar_time`` reads one bar's time without it."""

    def __init__(self, *, timeframe: str, times: pd.DatetimeIndex | BarGrid, symbols: list[str],
                 instrument_ids: list[int], closes: np.ndarray, excluded: dict[str, str] | None = None,
                 filled_bars: dict[str, int] | None = None) -> None:
        self.timeframe = timeframe
        self._times = times
        self.symbols = symbols
        self.instrument_ids = instrument_ids
        self.closes = closes
        self.excluded = {} if excluded is None else excluded  # symbol -> why it was left out
        self.filled_bars = {} if filled_bars is None else filled_bars  # symbol -> bars forward-filled

    @property
    def times(self) -> pd.DatetimeIndex:
        if isinstance(self._times, BarGrid):
            self._times = self._times.index()
        return self._times

    @times.setter
    def times(self, value: pd.DatetimeIndex | BarGrid) -> None:
        self._times = value

    @property
    def bars(self) -> int:
        return len(self._times)

    def bar_time(self, row: int) -> datetime:
        """Open time (aware, UTC) of bar ``row`` (negative: from the end)."""
        if isinstance(self._times, BarGrid):
            return self._times.time(row)
        return self._times[row].to_pydatetime()

    def __repr__(self) -> str:
        return (f"PriceWindow({self.timeframe}, {self.bars} bars, {len(self.symbols)} symbols, "
                f"{len(self.excluded)} excluded)")


def empty_window(timeframe: str) -> PriceWindow:
    return PriceWindow(timeframe=timeframe, times=BarGrid(first_s=0, step_s=1, bars=0), symbols=[], instrument_ids=[],
                       closes=np.empty((0, 0)))


def forward_fill(block: np.ndarray, *, limit: int) -> np.ndarray:
    """``pandas.DataFrame(block).ffill(limit=limit).to_numpy()`` in numpy: each NaN takes the last value above it in
    its column when that value is at most ``limit`` rows up (the first ``limit`` bars of a longer gap are filled)."""
    rows = np.arange(block.shape[0])[:, None]
    real = ~np.isnan(block)
    last_real = np.maximum.accumulate(np.where(real, rows, -1), axis=0)
    fill = ~real & (last_real >= 0) & (rows - last_real <= limit)
    filled = block.copy()
    filled[fill] = block[last_real[fill], np.nonzero(fill)[1]]
    return filled


def grid_window(
    *, timeframe: str, times: pd.DatetimeIndex | BarGrid, block: np.ndarray, symbols: Sequence[str],
    instrument_ids: Sequence[int], short_history: Sequence[str | None] | None = None, lead: np.ndarray | None = None,
) -> PriceWindow:
    """The window of ``block`` (bars x instruments, NaN where a bar is missing; columns in ``symbols`` order, which
    the window keeps) after the grid rules of the module docstring. ``short_history[k]``: the reason instrument k
    lacks history before the window (None when it has enough), checked after the window-start rule. ``lead``: the
    ``LEAD_BARS`` bars before the window (same columns, NaN where missing), which the window's first bars are
    forward-filled from; None: the window alone."""
    bars = len(times)
    real = ~np.isnan(block)
    if real.all():
        filled = block
    elif lead is not None and len(lead) and np.isnan(block[0]).any():
        filled = forward_fill(np.vstack((lead, block)), limit=MAX_FORWARD_FILL_BARS)[len(lead):]
    else:
        filled = forward_fill(block, limit=MAX_FORWARD_FILL_BARS)
    window = PriceWindow(timeframe=timeframe, times=times, symbols=[], instrument_ids=[], closes=np.empty((0, 0)))
    keep = []
    # Column by column below, but counted for all columns at once (a replay calls this every bar).
    reals, gaps = real.sum(axis=0).tolist(), np.isnan(filled).any(axis=0).tolist()
    starts = (~np.isnan(filled[0])).tolist()  # a real first bar, or one filled from the lead
    flat = _constant_columns(filled).tolist()
    for k, symbol in enumerate(symbols):
        reason = _exclusion(bars, reals[k], starts[k], gaps[k], short_history[k] if short_history else None)
        if reason is None and flat[k]:
            # A market that stopped trading but still publishes bars: no spread can be estimated against it (the
            # regression is undefined), and nothing could be traded on it.
            reason = "the same close on every bar of the window (a halted or frozen market)"
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


def _constant_columns(filled: np.ndarray) -> np.ndarray:
    """Columns whose every close equals their first (a missing bar, NaN, never does: such a column is left out by
    the gap or window-start rules anyway). One comparison pass: the replay builds a window every bar."""
    return (filled == filled[:1]).all(axis=0) if len(filled) else np.zeros(filled.shape[1], dtype=bool)


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
