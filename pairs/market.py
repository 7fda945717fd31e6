"""The market as the engine sees it: one protocol for "the price now", newest bars and price windows.

Signals, the bot and the paper exchange read prices only through a ``MarketView`` with a clock: live trading
passes ``StoredMarket`` (the Candle table, at the wall clock), a replay passes ``replay.market.ReplayMarket`` (history
held in memory, at the replayed bar's close). The same code thus generates signals and fills in backtests, replays
and live trading. Only closed bars count (open time + timeframe <= now): a bar still forming is the future. The one
exception is ``fill_quotes``, the execution model's price of a market order placed now: the open of the bar
opening at the clock (``execution_delay_bars`` later), which a replay holds and live trading doesn't yet (it
fills at the newest close).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from core.clock import Clock
from core.market_clock import market_clock, stored_clock_enabled
from pairs.marketdata.grid import PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Instrument
from pairs.selectors import decimal_bars, newest_bar_times, newest_closes, price_window

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
        """Open time of each instrument's newest bar up to ``end`` (None: up to the newest bar closed at the
        clock)."""
        ...

    def window(self, instruments: list[Instrument], *, bars: int, end: datetime) -> PriceWindow:
        """The last ``bars`` bars ending at ``end`` on the grid, as ``pairs.selectors.price_window`` builds it."""
        ...

    def fill_quotes(self, instrument_ids: Iterable[int], *, delay_bars: int = 0) -> dict[int, FillQuote]:
        """What a market order placed at the clock fills at, by the execution model (``pairs.quant.fills``):
        ``fill_quote_rule``. Instruments without any price are absent. (A market without this method quotes its
        ``closes`` with the fixed slippage only: the paper exchange checks.)"""
        ...


@dataclass(frozen=True)
class FillQuote:
    """The price a market order fills at before slippage, and its reference bar (the last bar closed at the fill
    time) that the variable slippage part reads; reference values are floats, NaN when that bar isn't stored."""

    price: Decimal
    filled_at: datetime | None = None  # the fill bar's open time when priced at its open; None: at the clock
    reference_open: float = math.nan
    reference_high: float = math.nan
    reference_low: float = math.nan
    reference_turnover: float = math.nan


def fill_bar_open(now: datetime, timeframe: str, delay_bars: int) -> datetime:
    """Open time of the bar whose open a market order placed at ``now`` fills at: the bar in progress at ``now``
    (the next bar after the newest closed one) plus ``delay_bars``."""
    return _bar_in_progress_open(now, timeframe) + timedelta(milliseconds=timeframe_ms(timeframe)) * delay_bars


def _bar_in_progress_open(now: datetime, timeframe: str) -> datetime:
    step = timedelta(milliseconds=timeframe_ms(timeframe))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((now - epoch) // step) * step


def fill_quote_rule(fill_bar: tuple | None, reference_bar: tuple | None, newest_close: Decimal | None,
                    fill_open: datetime | None = None) -> FillQuote | None:
    """The fill quote from the stored fill bar and reference bar (``(open, high, low, close, volume, turnover)``
    Decimals, None when not stored) and the newest close as of the clock: the fill bar's open when it is stored;
    otherwise (live, the fill bar is still forming and only closed bars are stored; a gap) the newest close, which
    on a market trading around the clock is the next open to within a tick, filled at the clock. None without any
    price. ``fill_open``: the fill bar's open time, the fill's time when it is priced at that bar's open."""
    price = fill_bar[0] if fill_bar is not None else newest_close
    if price is None:
        return None
    filled_at = fill_open if fill_bar is not None else None
    if reference_bar is None:
        return FillQuote(price=price, filled_at=filled_at)
    open_, high, low, close, volume, turnover = reference_bar
    quote_volume = float(turnover) if turnover is not None else float(volume) * float(close)
    return FillQuote(price=price, filled_at=filled_at, reference_open=float(open_), reference_high=float(high),
                     reference_low=float(low), reference_turnover=quote_volume)


def newest_closed_open(now: datetime, timeframe: str) -> datetime:
    """Open time of the newest bar closed at ``now`` (it opened one bar before ``now``)."""
    return now - timedelta(milliseconds=timeframe_ms(timeframe))


def stored_clock_end(timeframe: str) -> datetime | None:
    """On the demo's stored-data clock, the open time of the newest bar closed at that clock (the bars after it are
    the clock's future: a screening or a grading must not read them); on the wall clock None (the newest stored
    bar, with the live universe)."""
    if not stored_clock_enabled():
        return None
    return fill_bar_open(market_clock().now(), timeframe, -1)  # the bar before the one in progress


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
        """Without ``end``: up to the newest bar closed at the clock. Live nothing newer is stored, but on a clock
        that walks through stored history (the demo's stored-data clock) the later bars are the future."""
        end = self.clock.now() - self._bar if end is None else end
        return newest_bar_times(list(instrument_ids), self.timeframe, end=end)

    def window(self, instruments: list[Instrument], *, bars: int, end: datetime) -> PriceWindow:
        return price_window(instruments=instruments, timeframe=self.timeframe, bars=bars, end=end,
                            min_history_bars=None)

    def fill_quotes(self, instrument_ids: Iterable[int], *, delay_bars: int = 0) -> dict[int, FillQuote]:
        """``fill_quote_rule`` on the Candle table: live, the fill bar is the one forming now, not stored yet, so
        the fill is at the newest close, with the newest closed bar as the reference bar (also with a delay, which
        live trading can't honour: it fills when the bot acts)."""
        ids = set(instrument_ids)
        fill_open = fill_bar_open(self.clock.now(), self.timeframe, delay_bars)
        newest_open = fill_bar_open(self.clock.now(), self.timeframe, 0) - self._bar
        bars = {(iid, moment): values for iid, moment, values in
                decimal_bars(list(ids), self.timeframe, start=min(newest_open, fill_open - self._bar), end=fill_open)}
        closes = self.closes(ids)
        quotes = {}
        for iid in ids:
            reference = bars.get((iid, fill_open - self._bar)) or bars.get((iid, newest_open))
            quote = fill_quote_rule(bars.get((iid, fill_open)), reference, closes.get(iid), fill_open)
            if quote is not None:
                quotes[iid] = quote
        return quotes
