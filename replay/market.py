"""The replay's market: history held in memory, answered as the live market answers at the replay's clock.

``ReplayMarket`` loads the closes of a set of instruments once into a (bars x instruments) matrix on the regular grid
of the timeframe (NaN where a bar is missing) and is the ``pairs.market.MarketView`` of a replay: ``closes`` gives
each instrument's newest closed bar as of the clock (the stored Decimal), ``newest_bars`` and ``window`` give the
signals what ``pairs.selectors.price_window`` would read, through the same grid rules
(``pairs.marketdata.grid.grid_window``). It answers only what lies at or before the time it is asked about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd

from core.clock import Clock
from pairs.market import MAX_PRICE_AGE_BARS, FillQuote, fill_bar_open, fill_quote_rule
from pairs.marketdata.grid import LEAD_BARS, PriceWindow, grid_window
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Instrument
from pairs.selectors import candle_closes_frame, decimal_bars, decimal_closes

_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ns(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime (naive: UTC), in integers; a pandas Timestamp keeps its nanoseconds.
    Called several times a bar: pd.Timestamp(moment).value gives the same number, slower."""
    if isinstance(moment, pd.Timestamp):
        return int(moment.as_unit("ns").value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND * 1000


class ReplayMarket:
    """Closes of a set of instruments, loaded once into a (bars x instruments) matrix on the regular grid of the
    timeframe (NaN where a bar is missing), read as doubles as ``price_window`` reads them; the ``MarketView`` of a
    replay at ``clock``. Instruments asked for that were not loaded are loaded on first use.
    """

    def __init__(self, *, timeframe: str, first: datetime, last: datetime, instruments: Iterable[Instrument],
                 clock: Clock):
        self.timeframe = timeframe
        self.clock = clock
        self._step_ns = timeframe_ms(timeframe) * _NS_PER_MS
        self._first_ns, self._last_ns = _ns(first), _ns(last)
        # Integer arithmetic: np.arange(first, last + 1, step) sizes itself in doubles, which can't hold ns epochs.
        bars = (self._last_ns - self._first_ns) // self._step_ns + 1
        self.times_ns = self._first_ns + self._step_ns * np.arange(bars, dtype=np.int64)
        self._column: dict[int, int] = {}
        self._matrix = np.empty((len(self.times_ns), 0))
        self._last_real = np.empty((len(self.times_ns), 0), dtype=np.int64)
        self._decimals: dict[int, dict[int, Decimal]] = {}
        self._bars: dict[int, dict[int, tuple]] = {}
        self._times: dict[int, datetime] = {}
        self._load(list(instruments))

    # --------------------------------------------------------------------------------------------------- loading

    def _load(self, instruments: list[Instrument]) -> None:
        new = [i for i in {i.pk: i for i in instruments}.values() if i.pk not in self._column]
        if not new:
            return
        ids = np.array(sorted(i.pk for i in new), dtype=np.int64)
        block = np.full((len(self.times_ns), len(ids)), np.nan)
        instrument_ids, open_ns, closes = self._rows(ids.tolist())
        if len(instrument_ids):
            block[(open_ns - self._first_ns) // self._step_ns, np.searchsorted(ids, instrument_ids)] = closes
        # Row index of the newest real bar up to each row (-1 before the first).
        rows = np.arange(len(self.times_ns), dtype=np.int64)[:, None]
        last_real = np.maximum.accumulate(np.where(np.isnan(block), -1, rows), axis=0)
        offset = self._matrix.shape[1]
        for k, instrument_id in enumerate(ids.tolist()):
            self._column[instrument_id] = offset + k
        self._matrix = np.hstack([self._matrix, block])
        self._last_real = np.hstack([self._last_real, last_real])

    def _rows(self, instrument_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(instrument ids, open times in ns, closes as doubles) of the stored bars in the grid's range, read as
        ``price_window`` reads them (``candle_closes_frame``)."""
        frame = candle_closes_frame(instrument_ids, self.timeframe, _from_ns(self._first_ns), _from_ns(self._last_ns))
        if frame.empty:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
        open_ns = pd.DatetimeIndex(frame["open_time"]).as_unit("ns").asi8
        return (frame["instrument_id"].to_numpy(dtype=np.int64), np.asarray(open_ns, dtype=np.int64),
                frame["close"].to_numpy(dtype=float))

    def _ensure(self, instruments: Iterable[Instrument]) -> None:
        missing = [i for i in instruments if i.pk not in self._column]
        if missing:
            self._load(missing)

    def row_at_or_before(self, moment: datetime | None) -> int:
        """Grid row of the newest bar with open time <= ``moment`` (-1 if before the grid)."""
        if moment is None:
            return len(self.times_ns) - 1
        return min(int((_ns(moment) - self._first_ns) // self._step_ns), len(self.times_ns) - 1)

    # ------------------------------------------------------------------------------------------ MarketView protocol

    def newest_bars(self, instrument_ids: Iterable[int], *, end: datetime | None) -> dict[int, datetime]:
        ids = list(instrument_ids)
        missing = [i for i in ids if i not in self._column]
        if missing:
            self._ensure(Instrument.objects.filter(pk__in=missing))
        if end is None:  # as the live market: up to the newest bar closed at the clock
            end = self.clock.now() - timedelta(milliseconds=timeframe_ms(self.timeframe))
        row = self.row_at_or_before(end)
        if row < 0:
            return {}
        newest = {}
        for instrument_id in ids:
            real = int(self._last_real[row, self._column[instrument_id]])
            if real >= 0:
                newest[instrument_id] = self._time_of(real)
        return newest

    def _time_of(self, row: int) -> datetime:
        if row not in self._times:
            self._times[row] = _from_ns(int(self.times_ns[row]))
        return self._times[row]

    def window(self, instruments: list[Instrument], *, bars: int, end: datetime) -> PriceWindow:
        """``price_window(..., min_history_bars=None)`` from memory: same grid, same exclusions, same fill."""
        self._ensure(instruments)
        end_ts = pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end, tz="UTC")
        grid = pd.date_range(end=end_ts, periods=bars, freq=pd.Timedelta(self._step_ns, unit="ns"))
        last = (_ns(end) - self._first_ns) // self._step_ns
        first = last - bars + 1 - LEAD_BARS  # with the bars a window starting in a gap is filled from
        ordered = sorted(instruments, key=lambda i: i.symbol)
        columns = [self._column[i.pk] for i in ordered]
        block = np.full((bars + LEAD_BARS, len(ordered)), np.nan)
        lo, hi = max(first, 0), min(last, len(self.times_ns) - 1)
        if lo <= hi:
            block[lo - first : hi - first + 1] = self._matrix[lo : hi + 1][:, columns]
        return grid_window(timeframe=self.timeframe, times=grid, block=block[LEAD_BARS:],
                           symbols=[i.symbol for i in ordered], instrument_ids=[i.pk for i in ordered],
                           lead=block[:LEAD_BARS])

    def closes(self, instrument_ids: Iterable[int]) -> dict[int, Decimal]:
        """Each instrument's newest closed bar as of the clock (open time + timeframe <= now), at most
        ``MAX_PRICE_AGE_BARS`` old, as ``StoredMarket`` answers live; the close is the stored Decimal."""
        newest_open = self.clock.now() - timedelta(milliseconds=timeframe_ms(self.timeframe))
        row = self.row_at_or_before(newest_open)
        prices = {}
        for instrument_id in set(instrument_ids):
            price = self.close_at(instrument_id, row, MAX_PRICE_AGE_BARS)
            if price is not None:
                prices[instrument_id] = price
        return prices

    def fill_quotes(self, instrument_ids: Iterable[int], *, delay_bars: int = 0) -> dict[int, FillQuote]:
        """``pairs.market.fill_quote_rule`` from history: the open of the bar ``delay_bars`` after the one opening
        at the clock (the bar after the one just closed), the bar before it as the reference bar; the newest close
        where that bar isn't in the loaded range or isn't stored."""
        ids = set(instrument_ids)
        fill_open = fill_bar_open(self.clock.now(), self.timeframe, delay_bars)
        row = (_ns(fill_open) - self._first_ns) // self._step_ns
        closes = self.closes(ids)
        quotes = {}
        for instrument_id in ids:
            bars = self._bars_of(instrument_id)
            quote = fill_quote_rule(bars.get(row), bars.get(row - 1), closes.get(instrument_id), fill_open)
            if quote is not None:
                quotes[instrument_id] = quote
        return quotes

    def _bars_of(self, instrument_id: int) -> dict[int, tuple]:
        """Grid row -> the stored bar (exact Decimals), loaded per instrument on first use (only traded legs)."""
        if instrument_id not in self._bars:
            rows = decimal_bars([instrument_id], self.timeframe, start=_from_ns(self._first_ns),
                                end=_from_ns(self._last_ns))
            self._bars[instrument_id] = {(_ns(t) - self._first_ns) // self._step_ns: v for _, t, v in rows}
        return self._bars[instrument_id]

    # ------------------------------------------------------------------------------------------------- feed side

    def close_at(self, instrument_id: int, row: int, max_age_bars: int) -> Decimal | None:
        """The stored close (exact Decimal) of the instrument's newest real bar at or before grid row ``row`` and
        less than ``max_age_bars`` bars older than it; None if there is none."""
        column = self._column.get(instrument_id)
        if column is None:
            self._ensure(Instrument.objects.filter(pk=instrument_id))
            column = self._column.get(instrument_id)
        if column is None or row < 0:
            return None
        real = int(self._last_real[min(row, len(self.times_ns) - 1), column])
        if real < 0 or real <= row - max_age_bars:
            return None
        return self._decimals_of(instrument_id)[real]

    def _decimals_of(self, instrument_id: int) -> dict[int, Decimal]:
        """Grid row -> the close as stored (Decimal), loaded per instrument on first use (only traded legs)."""
        if instrument_id not in self._decimals:
            closes = decimal_closes(instrument_id, self.timeframe, start=_from_ns(self._first_ns),
                                    end=_from_ns(self._last_ns))
            self._decimals[instrument_id] = {(_ns(t) - self._first_ns) // self._step_ns: c for t, c in closes.items()}
        return self._decimals[instrument_id]


def _from_ns(value: int) -> datetime:
    return pd.Timestamp(value, unit="ns", tz="UTC").to_pydatetime()
