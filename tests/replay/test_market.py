"""The replay's market in memory answers as the database does, at every clock."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from core.clock import ManualClock
from pairs.market import StoredMarket
from pairs.models import Candle, Instrument
from pairs.selectors import price_window
from replay.market import ReplayMarket
from tests.replay.replay_world import START, import_market

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def test_the_market_in_memory_answers_as_the_database_does(shared_candles_dir):
    import_market(shared_candles_dir)
    instruments = list(Instrument.objects.order_by("symbol"))
    neo, bat = (Instrument.objects.get(symbol=s) for s in ("NEOUSDT", "BATUSDT"))
    # Gaps: 3 missing bars are forward-filled, 8 leave the symbol out of windows that span them.
    Candle.objects.filter(instrument=neo, open_time__gte=START + 5 * HOUR, open_time__lt=START + 8 * HOUR).delete()
    Candle.objects.filter(instrument=bat, open_time__gte=START + 20 * HOUR, open_time__lt=START + 28 * HOUR).delete()
    clock = ManualClock(START)
    market = ReplayMarket(timeframe="1h", first=START - 400 * HOUR, last=START + 100 * HOUR, instruments=instruments,
                          clock=clock)
    stored_market = StoredMarket(timeframe="1h", clock=clock)

    for end in (START, START + 6 * HOUR, START + 7 * HOUR, START + 24 * HOUR, START + 99 * HOUR):
        for bars in (151, 300):
            mine = market.window(instruments, bars=bars, end=end)
            stored = price_window(instruments=instruments, timeframe="1h", bars=bars, end=end, min_history_bars=None)
            assert list(mine.times) == list(stored.times)
            assert (mine.symbols, mine.instrument_ids) == (stored.symbols, stored.instrument_ids), end
            assert (mine.excluded, mine.filled_bars) == (stored.excluded, stored.filled_bars), end
            assert np.array_equal(mine.closes, stored.closes), end
        ids = [i.pk for i in instruments]
        assert market.newest_bars(ids, end=end) == stored_market.newest_bars(ids, end=end)
    assert "BATUSDT" in market.window(instruments, bars=151, end=START + 40 * HOUR).excluded

    # The prices: at each clock, each instrument's newest closed bar (at most 3 bars old), never a later one.
    ids = [i.pk for i in instruments]
    for hours in range(0, 40):
        clock.set(START + hours * HOUR)
        assert market.closes(ids) == stored_market.closes(ids), clock.now()
    clock.set(START + 7 * HOUR)  # bar 6 has just closed; NEOUSDT's newest is bar 4 (bars 5-7 are missing)
    assert market.closes([neo.pk]) == {neo.pk: Candle.objects.get(instrument=neo, open_time=START + 4 * HOUR).close}
    clock.set(START + 8 * HOUR)  # bar 4 is now 3 bars older than the newest closed bar: too old to trade at
    assert neo.pk not in market.closes(ids)




def test_fill_quotes_are_the_next_open_in_memory_and_the_newest_close_live(shared_candles_dir):
    import_market(shared_candles_dir)
    neo = Instrument.objects.get(symbol="NEOUSDT")
    bar = {k: Candle.objects.get(instrument=neo, open_time=START + k * HOUR) for k in range(4)}
    clock = ManualClock(START + HOUR)  # bar 0 has just closed; bar 1 opens now
    market = ReplayMarket(timeframe="1h", first=START - 10 * HOUR, last=START + 3 * HOUR, instruments=[neo],
                          clock=clock)
    quote = market.fill_quotes([neo.pk])[neo.pk]
    assert (quote.price, quote.filled_at) == (bar[1].open, START + HOUR)
    assert bar[1].open != bar[0].close  # the data tells the next open from the signal bar's close
    # the reference bar is the one just closed: bar 0's range and its quote volume (volume x close: no turnover)
    assert (quote.reference_open, quote.reference_high, quote.reference_low) == (
        float(bar[0].open), float(bar[0].high), float(bar[0].low))
    assert quote.reference_turnover == pytest.approx(float(bar[0].volume) * float(bar[0].close))
    delayed = market.fill_quotes([neo.pk], delay_bars=2)[neo.pk]
    assert (delayed.price, delayed.filled_at, delayed.reference_high) == (bar[3].open, START + 3 * HOUR,
                                                                          float(bar[2].high))
    # Past the loaded range there is no later open: the newest close, at the clock.
    assert market.fill_quotes([neo.pk], delay_bars=3)[neo.pk].price == bar[0].close

    # Live (the Candle table), a few minutes into bar 1: it is not stored yet, so the fill is at bar 0's close.
    Candle.objects.filter(instrument=neo, open_time__gte=START + HOUR).delete()
    clock.set(START + HOUR + timedelta(minutes=4))
    live = StoredMarket(timeframe="1h", clock=clock).fill_quotes([neo.pk])[neo.pk]
    assert (live.price, live.filled_at, live.reference_high) == (bar[0].close, None, float(bar[0].high))
