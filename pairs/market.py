"""The market as the engine sees it: one protocol for "the price now", newest bars and price windows.

Signals, the bot and the paper exchange read prices only through a ``MarketView`` with a clock: live trading
passes ``StoredMarket`` (the Candle table, at the wall clock), a replay passes ``replay.market.ReplayMarket`` (history
held in memory, at the replayed bar's close). The same code thus generates signals and fills in backtests, replays
and live trading. Only closed bars count (open time + timeframe <= now): a bar still forming is the future.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from core.clock import Clock
from pairs.marketdata.grid import PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Instrument
from pairs.selectors import newest_bar_times, newest_closes, price_window

# A close older than this many bars is no price to trade at.
MAX_PRICE_AGE_BARS = 3


class MarketView(Protocol):
    timeframe: str
    clock: Clock

    def closes(self, instrument_ids: Iterable[int]) -> dict[int, Decimal]:
        """The close of each instrument's newest closed bar as of the clock, at most MAX_PRICE_AGE_BARS old;
        instruments without one are absent."""
        ...

    def newest_bars(self, instrument_ids: Iterable[int], *, end: datetime | None) -> dict[int, datetime]:
        """Open time of each instrument's newest bar up to ``end`` (every stored bar if None)."""
        ...

    def window(self, instruments: list[Instrument], *, bars: int, end: datetime) -> PriceWindow:
        """The last ``bars`` bars ending at ``end`` on the grid, as ``pairs.selectors.price_window`` builds it."""
        ...


def newest_closed_open(now: datetime, timeframe: str) -> datetime:
    """Open time of the newest bar closed at ``now`` (it opened one bar before ``now``)."""
    return now - timedelta(milliseconds=timeframe_ms(timeframe))


class StoredMarket:
    """The Candle table, read at the clock. Closes are cached while the newest closed bar stays the same (a tick
    asks for them several times), so one query answers a tick."""

    def __init__(self, *, timeframe: str, clock: Clock, max_age_bars: int = MAX_PRICE_AGE_BARS):
        self.timeframe = timeframe
        self.clock = clock
        self._bar = timedelta(milliseconds=timeframe_ms(timeframe))
        self._max_age_bars = max_age_bars
        self._cache: dict[int, Decimal | None] = {}
        self._cached_at: datetime | None = None

    def closes(self, instrument_ids: Iterable[int]) -> dict[int, Decimal]:
        ids = set(instrument_ids)
        newest_open = self.clock.now() - self._bar
        if newest_open != self._cached_at:
            self._cache, self._cached_at = {}, newest_open
        missing = [i for i in ids if i not in self._cache]
        if missing:
            found = newest_closes(missing, self.timeframe, newest_open=newest_open,
                                  oldest_open=newest_open - self._bar * self._max_age_bars)
            self._cache.update({i: found.get(i) for i in missing})
        return {i: self._cache[i] for i in ids if self._cache[i] is not None}

    def newest_bars(self, instrument_ids: Iterable[int], *, end: datetime | None) -> dict[int, datetime]:
        return newest_bar_times(list(instrument_ids), self.timeframe, end=end)

    def window(self, instruments: list[Instrument], *, bars: int, end: datetime) -> PriceWindow:
        return price_window(instruments=instruments, timeframe=self.timeframe, bars=bars, end=end,
                            min_history_bars=None)
