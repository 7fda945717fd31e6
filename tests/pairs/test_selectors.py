"""universe_instruments and price_window: who is in the screen's universe, and the close-price grid it works on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from pairs.marketdata.grid import MAX_FORWARD_FILL_BARS
from pairs.models import Instrument, StrategyConfig
from pairs.selectors import price_window, universe_instruments
from pairs.services.market_data import candles_import_directory, candles_upsert
from tests.factories import InstrumentFactory

pytestmark = pytest.mark.django_db

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z


def utc_hour(hour: int) -> pd.Timestamp:
    return pd.Timestamp(T0 + hour * H, unit="ms", tz="UTC")


# ---------------------------------------------------------------------------------------------------- universe


def test_universe_leaves_out_excluded_delisted_low_turnover_and_foreign_instruments():
    config = StrategyConfig.current()
    config.min_turnover_24h = Decimal("5000000")
    config.save()
    InstrumentFactory(symbol="AAAUSDT", turnover_24h=Decimal("10000000"))
    InstrumentFactory(symbol="BBBUSDT", turnover_24h=Decimal("10000000"), excluded=True, exclusion_reason="x")
    InstrumentFactory(symbol="CCCUSDT", turnover_24h=Decimal("10000000"), status=Instrument.Status.DELISTED)
    InstrumentFactory(symbol="DDDUSDT", turnover_24h=Decimal("4999999.99"))
    InstrumentFactory(symbol="EEEUSDT", turnover_24h=None)  # imported from files: unknown turnover passes
    InstrumentFactory(symbol="FFFUSDT", turnover_24h=Decimal("5000000"))  # exactly the minimum
    InstrumentFactory(symbol="GGGUSDC", quote="USDC", settle="USDC", turnover_24h=Decimal("10000000"))
    InstrumentFactory(exchange="binance", symbol="HHHUSDT", turnover_24h=Decimal("10000000"))
    InstrumentFactory(symbol="IIIUSDT", turnover_24h=Decimal("10000000"), status=Instrument.Status.PRELAUNCH)
    InstrumentFactory(symbol="ABCUSDT", turnover_24h=Decimal("99000000"))

    symbols = [i.symbol for i in universe_instruments(config=config)]

    assert symbols == ["AAAUSDT", "ABCUSDT", "EEEUSDT", "FFFUSDT"]


def test_universe_follows_the_configured_minimum():
    config = StrategyConfig.current()
    InstrumentFactory(symbol="AAAUSDT", turnover_24h=Decimal("1000"))
    config.min_turnover_24h = Decimal("500")
    config.save()
    assert [i.symbol for i in universe_instruments(config=config)] == ["AAAUSDT"]
    config.min_turnover_24h = Decimal("1000.01")
    config.save()
    assert list(universe_instruments(config=config)) == []


# ---------------------------------------------------------------------------------------------------- synthetic window


def store(symbol: str, hours, close=lambda hour: 100.0 + hour) -> Instrument:
    instrument = InstrumentFactory(symbol=symbol)
    hours = list(hours)
    rows = [(T0 + h * H, close(h), close(h) + 1, close(h) - 1, close(h), 1.0) for h in hours]
    frame = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
    candles_upsert(instrument=instrument, timeframe="1h", candles=frame)
    return instrument


def test_grid_has_exactly_bars_steps_ending_at_the_newest_bar():
    a = store("AAAUSDT", range(101))
    b = store("BBBUSDT", range(50, 101), close=lambda h: 2.0 + h / 4)
    c = store("CCCUSDT", range(60, 90))  # stopped early: the window still ends at the newest bar of all

    window = price_window(instruments=[c, b, a], timeframe="1h", bars=24, min_history_bars=12)

    assert len(window.times) == 24
    assert window.times[-1] == utc_hour(100)
    assert window.times[0] == utc_hour(77)
    assert list(window.times[1:] - window.times[:-1]) == [pd.Timedelta(hours=1)] * 23
    assert window.symbols == ["AAAUSDT", "BBBUSDT"]
    assert window.excluded == {"CCCUSDT": f"a gap longer than {MAX_FORWARD_FILL_BARS} bars"}
    assert window.closes.shape == (24, 2)
    assert window.closes[:, 0].tolist() == [100.0 + h for h in range(77, 101)]
    assert window.closes[:, 1].tolist() == [2.0 + h / 4 for h in range(77, 101)]
    assert window.instrument_ids == [a.pk, b.pk]


def test_window_ending_at_a_given_time():
    a = store("AAAUSDT", range(100))
    b = store("BBBUSDT", range(100), close=lambda h: 50.0 - h / 4)

    window = price_window(instruments=[a, b], timeframe="1h", bars=10, end=utc_hour(60).to_pydatetime())

    assert window.times[0] == utc_hour(51) and window.times[-1] == utc_hour(60)
    assert window.symbols == ["AAAUSDT", "BBBUSDT"]
    assert window.closes[:, 0].tolist() == [100.0 + h for h in range(51, 61)]
    assert window.closes[:, 1].tolist() == [50.0 - h / 4 for h in range(51, 61)]
    assert window.excluded == {} and window.filled_bars == {}
    assert window.closes.dtype == np.float64


def test_short_gap_is_forward_filled_long_gap_short_history_and_no_candles_are_left_out():
    full = store("AAAUSDT", range(100))
    gap2 = store("GAP2USDT", [h for h in range(100) if h not in (90, 91)])
    gap10 = store("GAP10USDT", [h for h in range(100) if not 80 <= h <= 89])
    late = store("LATEUSDT", range(85, 100))
    old = store("OLDUSDT", range(40))  # stopped before the window
    sparse = store("SPARSEUSDT", [h for h in range(100) if h not in (77, 81, 85, 89, 93, 97)])
    empty = InstrumentFactory(symbol="EMPTYUSDT")

    window = price_window(
        instruments=[full, gap2, gap10, late, old, sparse, empty], timeframe="1h", bars=24, min_history_bars=12
    )

    assert window.times[0] == utc_hour(76) and window.times[-1] == utc_hour(99)
    assert window.symbols == ["AAAUSDT", "GAP2USDT", "SPARSEUSDT"]
    assert window.filled_bars == {"GAP2USDT": 2, "SPARSEUSDT": 6}
    gap2_closes = window.closes[:, 1]
    hours = list(range(76, 100))
    assert gap2_closes[hours.index(89)] == 189.0
    assert gap2_closes[hours.index(90)] == 189.0  # forward-filled from the previous close
    assert gap2_closes[hours.index(91)] == 189.0
    assert gap2_closes[hours.index(92)] == 192.0
    assert window.excluded == {
        "EMPTYUSDT": "no candles in the window",
        "GAP10USDT": f"a gap longer than {MAX_FORWARD_FILL_BARS} bars",
        "LATEUSDT": "short history: no bar at the window start",
        "OLDUSDT": "no candles in the window",
    }
    assert not np.isnan(window.closes).any()


def test_too_many_filled_bars_is_left_out_even_if_every_gap_is_short():
    sparse = store("SPARSEUSDT", [h for h in range(100) if h % 3 != 2])  # every third bar missing
    window = price_window(instruments=[sparse], timeframe="1h", bars=24, min_history_bars=20)
    assert window.symbols == []
    # 8 missing of 24: more than the 6 bars (MAX_FORWARD_FILL_BARS) tolerated in a window this short.
    assert window.excluded == {"SPARSEUSDT": "8 of 24 bars missing in the window"}
    assert window.closes.shape == (24, 0)


def test_history_longer_than_the_window_is_required_when_configured():
    young = store("YOUNGUSDT", list(range(76, 100)))  # exactly the 24 bars of the window
    old = store("OLDERUSDT", list(range(100)))
    window = price_window(instruments=[young, old], timeframe="1h", bars=24, min_history_bars=48)
    assert window.symbols == ["OLDERUSDT"]
    assert window.excluded == {"YOUNGUSDT": "short history: less than 48 bars"}


def test_a_gap_of_exactly_the_fill_limit_is_filled():
    edge = store("EDGEUSDT", [h for h in range(100) if not 90 <= h < 90 + MAX_FORWARD_FILL_BARS])
    window = price_window(instruments=[edge], timeframe="1h", bars=24, min_history_bars=1)
    assert window.symbols == ["EDGEUSDT"]
    assert window.filled_bars == {"EDGEUSDT": MAX_FORWARD_FILL_BARS}


def test_no_candles_at_all_gives_an_empty_window():
    window = price_window(instruments=[InstrumentFactory(symbol="AAAUSDT")], timeframe="1h", bars=24)
    assert (len(window.times), window.symbols, window.closes.shape) == (0, [], (0, 0))


def test_other_timeframes_do_not_leak_in():
    a = store("AAAUSDT", range(30))
    frame = pd.DataFrame([(T0 + 40 * H, 1.0, 1.0, 1.0, 1.0, 1.0)],
                         columns=["timestamp", "open", "high", "low", "close", "volume"])  # fmt: skip
    candles_upsert(instrument=a, timeframe="4h", candles=frame)
    window = price_window(instruments=[a], timeframe="1h", bars=10)
    assert window.times[-1] == utc_hour(29)
    assert window.closes[:, 0].tolist() == [100.0 + h for h in range(20, 30)]


# ---------------------------------------------------------------------------------------------------- real data

REAL_FULL = ["ADAUSDT", "BTCUSDT", "DOGEUSDT", "ETHUSDT", "LINKUSDT"]


def test_real_window_of_2000_bars(shared_candles_dir):
    summary = candles_import_directory(
        directory=shared_candles_dir, timeframe="1h", exchange="bybit", symbols=[*REAL_FULL, "ARUSDT"]
    )
    assert summary.failed == []
    instruments = list(Instrument.objects.filter(exchange="bybit"))

    window = price_window(instruments=instruments, timeframe="1h", bars=2000, min_history_bars=2000)

    assert window.times[-1] == pd.Timestamp(datetime(2021, 7, 17, 20, tzinfo=UTC))
    assert window.times[0] == pd.Timestamp(datetime(2021, 4, 25, 13, tzinfo=UTC))
    assert len(window.times) == 2000
    assert window.symbols == REAL_FULL
    assert list(window.excluded) == ["ARUSDT"]
    assert window.excluded["ARUSDT"].startswith("short history")  # listed 2021-05-14
    assert window.filled_bars == {}
    assert window.closes.shape == (2000, 5)

    rng = np.random.default_rng(7)
    rows = sorted({0, 1, 999, 1999, *rng.integers(0, 2000, size=20).tolist()})
    for column, symbol in enumerate(REAL_FULL):
        csv = pd.read_csv(shared_candles_dir / f"{symbol}.csv.gz").set_index("timestamp")["close"]
        for row in rows:
            ts_ms = int(window.times[row].timestamp()) * 1000
            assert window.closes[row, column] == csv.loc[ts_ms], (symbol, window.times[row])
    btc = window.closes[:, REAL_FULL.index("BTCUSDT")]
    assert btc[-1] == 31723.09


def test_candle_bounds_per_instrument_seeks_equal_the_plain_aggregate():
    from django.db.models import Max, Min

    from pairs.models import Candle
    from pairs.selectors import candle_bounds
    from tests.factories import CandleFactory

    assert candle_bounds(exchange="bybit", timeframe="1h") == (None, None)
    a = InstrumentFactory(symbol="AAAUSDT", base="AAA", exchange="bybit")
    b = InstrumentFactory(symbol="BBBUSDT", base="BBB", exchange="bybit")
    other = InstrumentFactory(symbol="CCCUSDT", base="CCC", exchange="binance")
    InstrumentFactory(symbol="DDDUSDT", base="DDD", exchange="bybit")  # no candles
    for instrument, hours in ((a, range(5, 20)), (b, range(2, 12)), (other, range(0, 40))):
        for hour in hours:
            CandleFactory(instrument=instrument, open_time=utc_hour(hour).to_pydatetime())
    CandleFactory(instrument=a, timeframe="4h", open_time=utc_hour(60).to_pydatetime())

    assert candle_bounds(exchange="bybit", timeframe="1h") == (utc_hour(2), utc_hour(19))
    assert candle_bounds(timeframe="1h") == (utc_hour(0), utc_hour(39))
    assert candle_bounds(exchange="bybit", timeframe="1h", start=utc_hour(6).to_pydatetime(),
                         end=utc_hour(10).to_pydatetime()) == (utc_hour(6), utc_hour(10))
    assert candle_bounds(exchange="bybit", timeframe="4h") == (utc_hour(60), utc_hour(60))
    assert candle_bounds(exchange="bybit") == (utc_hour(2), utc_hour(60))
    plain = Candle.objects.filter(instrument__exchange="bybit", timeframe="1h").aggregate(Min("open_time"),
                                                                                         Max("open_time"))
    assert candle_bounds(exchange="bybit", timeframe="1h") == (plain["open_time__min"], plain["open_time__max"])




def test_point_in_time_turnover_of_imported_candles_is_close_times_volume_as_the_walkforward_reads_it(
        shared_candles_dir):
    """Files carry volume, not turnover: the replay's point-in-time universe must filter on close x volume as the
    walk-forward's ``universe_at`` does (ATM, COCOS and NMR traded under 5M USDT a day in May 2021), not let every
    imported symbol through as one of unknown turnover."""
    from pairs.quant.walkforward import WalkForwardParams, universe_at
    from pairs.services.walkforward import load_market

    symbols = ["ATMUSDT", "BTCUSDT", "COCOSUSDT", "ETHUSDT", "NMRUSDT"]
    summary = candles_import_directory(directory=shared_candles_dir, timeframe="1h", exchange="bybit",
                                       symbols=symbols)
    assert summary.failed == []
    config = StrategyConfig.current()
    config.min_turnover_24h = Decimal("5000000")
    config.save()
    at = pd.Timestamp("2021-05-11T03:00:00Z")

    point_in_time = {i.symbol for i in universe_instruments(config=config, at=at.to_pydatetime())}

    instruments = list(Instrument.objects.filter(symbol__in=symbols).order_by("symbol"))
    market = load_market(config=config, instruments=instruments, start=at - pd.Timedelta(hours=199), end=at)
    params = WalkForwardParams(lookback_bars=100, min_history_bars=100, min_turnover_24h=5_000_000.0)
    walkforward = {market.symbols[k] for k in universe_at(market, 100, 200, params)}
    assert walkforward == {"BTCUSDT", "ETHUSDT"}
    assert point_in_time == walkforward
