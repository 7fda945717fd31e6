"""Funding rates: fetched from the exchange (fake Bybit on loopback), stored once, and used by the backtests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from exchanges.ccxt_client import CcxtExchange, build_ccxt_client
from ladder.services import pair_statistics_update
from pairs.marketdata.grid import PriceWindow
from pairs.models import FundingRate, Instrument, Pair, PairStatistics, StrategyConfig
from pairs.services.evidence import funding_rate_matrix
from pairs.services.market_data import candles_upsert, funding_rates_fetch_instrument, instruments_sync
from tests.factories import InstrumentFactory, LevelFactory
from tests.fakes.bybit import FakeBybit

pytestmark = pytest.mark.django_db

H = 3_600_000
EIGHT_HOURS = 8 * H
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z


@pytest.fixture
def fake():
    with FakeBybit() as server:
        yield server


def test_funding_history_is_fetched_in_windows_and_stored_once(fake):
    fake.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001", price="50000")
    settlements = [(T0 + k * EIGHT_HOURS, f"0.000{k % 9 + 1}") for k in range(450)]  # 150 days, > 2 windows
    fake.set_funding_history("BTCUSDT", settlements)
    client = CcxtExchange(build_ccxt_client("bybit", base_url=fake.base_url, enable_rate_limit=False,
                                            timeout_ms=3000))
    instruments_sync(exchange="bybit", specs=client.linear_instruments())
    instrument = Instrument.objects.get(symbol="BTCUSDT")
    now_ms = T0 + 449 * EIGHT_HOURS + H

    stored = funding_rates_fetch_instrument(exchange_client=client, instrument=instrument,
                                            backfill_ms=now_ms - T0, now_ms=now_ms)

    assert stored == 450
    rates = list(FundingRate.objects.filter(instrument=instrument).order_by("funding_time")
                 .values_list("funding_time", "rate"))
    assert rates[0] == (datetime(2021, 1, 1, tzinfo=UTC), Decimal("0.0001"))
    assert rates[-1][0] == datetime.fromtimestamp((T0 + 449 * EIGHT_HOURS) / 1000, tz=UTC)
    assert len(fake.requests_to("/v5/market/funding/history")) == 3  # 200 settlements a request

    # Again, with one new settlement: only the new one is asked for and stored.
    fake.set_funding_history("BTCUSDT", [*settlements, (T0 + 450 * EIGHT_HOURS, "-0.0002")])
    fake.clear_requests()
    again = funding_rates_fetch_instrument(exchange_client=client, instrument=instrument, backfill_ms=0,
                                           now_ms=now_ms + EIGHT_HOURS)
    assert again == 1
    assert FundingRate.objects.filter(instrument=instrument).count() == 451
    assert len(fake.requests_to("/v5/market/funding/history")) == 1


def test_settlements_closer_than_the_instruments_interval_today_are_all_stored(fake):
    """An 8-hour contract that settled hourly for a while (Bybit shortens the interval when the rate hits its cap):
    its windows, counted in today's 8-hour interval, hold more than the 200 settlements a request answers."""
    fake.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001", price="50000")
    fake.set_funding_history("BTCUSDT", [(T0 + k * H, "0.0001") for k in range(500)])
    client = CcxtExchange(build_ccxt_client("bybit", base_url=fake.base_url, enable_rate_limit=False,
                                            timeout_ms=3000))
    instruments_sync(exchange="bybit", specs=client.linear_instruments())
    instrument = Instrument.objects.get(symbol="BTCUSDT")
    assert instrument.funding_interval_minutes == 480

    stored = funding_rates_fetch_instrument(exchange_client=client, instrument=instrument, backfill_ms=500 * H,
                                            now_ms=T0 + 500 * H)

    assert stored == 500
    assert FundingRate.objects.filter(instrument=instrument).count() == 500


def test_a_settlement_belongs_to_the_bar_it_closes():
    a, b = InstrumentFactory(symbol="AAAUSDT"), InstrumentFactory(symbol="BBBUSDT")
    times = pd.date_range("2021-01-01 00:00", periods=24, freq="h", tz="UTC")
    window = PriceWindow(timeframe="1h", times=times, symbols=["AAAUSDT", "BBBUSDT"], instrument_ids=[a.pk, b.pk],
                         closes=np.ones((24, 2)))
    FundingRate.objects.create(instrument=a, funding_time=datetime(2021, 1, 1, 8, tzinfo=UTC), rate=Decimal("0.001"))
    FundingRate.objects.create(instrument=b, funding_time=datetime(2021, 1, 1, 16, tzinfo=UTC), rate=Decimal("-0.002"))
    # Outside the window (before its first bar's close) and after its last bar's close: ignored.
    FundingRate.objects.create(instrument=a, funding_time=datetime(2021, 1, 1, 0, tzinfo=UTC), rate=Decimal("0.5"))
    FundingRate.objects.create(instrument=a, funding_time=datetime(2021, 1, 2, 8, tzinfo=UTC), rate=Decimal("0.5"))

    rates = funding_rate_matrix(window)

    # 08:00 is the close of the bar opened at 07:00 (index 7); 16:00 closes bar 15.
    assert rates[7, 0] == pytest.approx(0.001)
    assert rates[15, 1] == pytest.approx(-0.002)
    assert np.isnan(np.delete(rates.ravel(), [7 * 2 + 0, 15 * 2 + 1])).all()


def _market(n_bars: int) -> tuple[Instrument, Instrument]:
    rng = np.random.default_rng(7)
    log_x = np.cumsum(rng.normal(0, 0.01, n_bars)) + np.log(100)
    noise = np.zeros(n_bars)
    for t in range(1, n_bars):
        noise[t] = 0.85 * noise[t - 1] + rng.normal(0, 0.01)
    log_y = 0.5 + 0.9 * log_x + noise
    legs = []
    for symbol, series in (("YYUSDT", np.exp(log_y)), ("XXUSDT", np.exp(log_x))):
        instrument = InstrumentFactory(symbol=symbol)
        frame = pd.DataFrame({"timestamp": T0 + np.arange(n_bars) * H, "open": series, "high": series * 1.001,
                              "low": series * 0.999, "close": series, "volume": 1.0})
        candles_upsert(instrument=instrument, timeframe="1h", candles=frame)
        legs.append(instrument)
    return legs[0], legs[1]


def test_stored_rates_replace_the_default_in_the_backtests():
    config = StrategyConfig.current()
    config.lookback_bars, config.validation_bars, config.zscore_window_bars = 400, 300, 100
    config.entry_z = 1.5
    config.save()
    y, x = _market(800)
    pair = Pair.objects.create(y_instrument=y, x_instrument=x, hedge_ratio=0.9, intercept=0.5, spread_mean=0.0,
                               spread_std=0.019, half_life_bars=6.0, qvalue=0.01, level=LevelFactory(number=0))

    def totals() -> dict[str, float]:
        pair_statistics_update(config=config)
        return {s.window: s.total_return for s in PairStatistics.objects.filter(pair=pair)}

    with_default = totals()
    # A punitive stored rate at every settlement of the y leg: long y pays it, short y receives it.
    start = datetime.fromtimestamp(T0 / 1000, tz=UTC)
    FundingRate.objects.bulk_create(
        FundingRate(instrument=y, funding_time=start + timedelta(hours=8 * k), rate=Decimal("0.01"))
        for k in range(1, 100)
    )
    with_stored = totals()

    assert set(with_default) == {PairStatistics.Window.IN_SAMPLE, PairStatistics.Window.VALIDATION}
    for window in with_default:
        assert with_stored[window] != pytest.approx(with_default[window], abs=1e-6), window
