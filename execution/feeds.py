"""Market feeds of the bots: the latest price of each instrument as of the engine's clock.

The engine takes its clock and its feed as inputs, so live trading, paper trading and a replay run the same code:
live and paper read the newest closed bar from the Candle table, a replay slices history held in memory.
Only closed bars count (open time + timeframe <= now): a bar still forming at ``now`` is the future in a replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, Instrument

# A close older than this many bars is no price to trade at.
MAX_PRICE_AGE_BARS = 3


class PriceFeed(Protocol):
    def closes(self, instrument_ids: Iterable[int]) -> dict[int, Decimal]:
        """The close of each instrument's newest closed bar as of the clock; instruments without one are absent."""
        ...


class StoredCandleFeed:
    """Newest closed candle per instrument from the database, at most MAX_PRICE_AGE_BARS old. One query a call."""

    def __init__(self, *, timeframe: str, now: datetime, max_age_bars: int = MAX_PRICE_AGE_BARS):
        self.timeframe = timeframe
        self.now = now
        self._bar = timedelta(milliseconds=timeframe_ms(timeframe))
        self._max_age_bars = max_age_bars

        self._cache: dict[int, Decimal | None] = {}  # one feed serves one tick: its clock doesn't move

    def closes(self, instrument_ids: Iterable[int]) -> dict[int, Decimal]:
        ids = set(instrument_ids)
        missing = [i for i in ids if i not in self._cache]
        if missing:
            newest_open = self.now - self._bar
            rows = (
                Candle.objects.filter(instrument_id__in=missing, timeframe=self.timeframe, open_time__lte=newest_open,
                                      open_time__gt=newest_open - self._bar * self._max_age_bars)
                .order_by("open_time")
                .values_list("instrument_id", "close")
            )
            found = dict(rows)  # ordered by time: the newest close of each instrument wins
            self._cache.update({i: found.get(i) for i in missing})
        return {i: self._cache[i] for i in ids if self._cache[i] is not None}


class SymbolPrices:
    """``price_of(symbol)`` for the paper exchange, answered from a feed (instruments looked up once)."""

    def __init__(self, feed: PriceFeed, *, exchange: str):
        self._feed = feed
        self._ids = dict(Instrument.objects.filter(exchange=exchange).values_list("symbol", "pk"))

    def prefetch(self, symbols: Iterable[str]) -> None:
        """Ask the feed for the prices of ``symbols`` at once (one query for a StoredCandleFeed, which caches them),
        so that the calls for them that follow don't query one by one. The paper exchange calls it when it can."""
        ids = [self._ids[symbol] for symbol in symbols if symbol in self._ids]
        if ids:
            self._feed.closes(ids)

    def __call__(self, symbol: str) -> Decimal | None:
        instrument_id = self._ids.get(symbol)
        return None if instrument_id is None else self._feed.closes([instrument_id]).get(instrument_id)
