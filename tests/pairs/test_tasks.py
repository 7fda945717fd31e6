"""pairs.tasks.fetch_market_data, run in-process against the fake Bybit: its counts match the database."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pairs.models import Candle, Instrument, StrategyConfig
from pairs.services import market_data
from pairs.tasks import fetch_market_data
from tests.fakes.bybit import FakeBybit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_sleeps")]

H = 3_600_000
NOW_MS = 1_704_067_200_000 + 300 * H + 45 * 60_000  # 2024-01-13T12:45Z
OPEN_BAR = NOW_MS // H * H






@pytest.fixture
def clock(monkeypatch) -> dict:
    """The market-data service's clock; move it by changing clock['ms']."""
    state = {"ms": NOW_MS}
    monkeypatch.setattr(
        market_data, "timezone", types.SimpleNamespace(now=lambda: datetime.fromtimestamp(state["ms"] / 1000, tz=UTC))
    )
    return state


def bars(hours_back_first: int, hours_back_last: int, base: str = "100") -> list[tuple]:
    return [(OPEN_BAR - k * H, f"{base}.5", f"{base}.9", base, f"{base}.{k:03d}", "7")
            for k in range(hours_back_first, hours_back_last - 1, -1)]  # fmt: skip


@pytest.fixture
def fake(settings, clock):
    with FakeBybit() as server:
        server.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                              price="42000", turnover_24h="2000000000")  # fmt: skip
        server.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01",
                              price="2500", turnover_24h="900000000")  # fmt: skip
        server.add_instrument("SOLUSDT", base="SOL", tick_size="0.001", qty_step="0.1", min_qty="0.1",
                              price="90", turnover_24h="60000000")  # fmt: skip
        server.add_instrument("LOWUSDT", base="LOW", tick_size="0.0001", qty_step="1", min_qty="1", price="0.5",
                              turnover_24h="1000")  # fmt: skip
        server.set_candles("BTCUSDT", "1h", bars(200, 0))
        server.set_candles("ETHUSDT", "1h", bars(200, 0, base="20"))
        server.set_candles("SOLUSDT", "1h", bars(10, 0, base="9"))  # listed 10 hours ago
        server.set_candles("LOWUSDT", "1h", bars(200, 0))
        settings.STATARB_MARKET_DATA_URL = server.base_url
        settings.STATARB_EXCHANGE_RATE_LIMIT = False
        settings.STATARB_EXCHANGE_TIMEOUT_MS = 2000
        config = StrategyConfig.current()
        config.backfill_bars = 72
        config.save()
        yield server
    assert server.errors == []


def candle_counts() -> dict[str, int]:
    return {i.symbol: i.candles.count() for i in Instrument.objects.all() if i.candles.exists()}


def test_fetch_market_data_counts_match_the_database(fake, clock):
    result = fetch_market_data.apply().get()

    assert result == {
        "instruments_created": 4,
        "instruments_delisted": 0,
        "symbols": 3,
        "candles": 72 + 72 + 10,
        "failed": {},
    }
    assert Instrument.objects.count() == result["instruments_created"]
    assert Candle.objects.count() == result["candles"]
    assert candle_counts() == {"BTCUSDT": 72, "ETHUSDT": 72, "SOLUSDT": 10}
    newest = Candle.objects.filter(instrument__symbol="ETHUSDT").latest("open_time")
    assert newest.open_time == datetime.fromtimestamp((OPEN_BAR - H) / 1000, tz=UTC)
    assert newest.close == Decimal("20.001")

    # two hours later: two more closed bars each, SOL delisted, nothing stored twice
    for symbol, base in (("BTCUSDT", "100"), ("ETHUSDT", "20"), ("SOLUSDT", "9")):
        fake.add_candles(symbol, "1h", [(OPEN_BAR + k * H, f"{base}.5", f"{base}.9", f"{base}.1", f"{base}.2", "1")
                                        for k in (1, 2)])  # fmt: skip
    fake.delist("SOLUSDT")
    clock["ms"] = NOW_MS + 2 * H

    result = fetch_market_data()

    assert result == {"instruments_created": 0, "instruments_delisted": 1, "symbols": 2, "candles": 4, "failed": {}}
    assert Instrument.objects.get(symbol="SOLUSDT").status == Instrument.Status.DELISTED
    assert Candle.objects.count() == 72 + 72 + 10 + 4
    assert candle_counts() == {"BTCUSDT": 74, "ETHUSDT": 74, "SOLUSDT": 10}


def test_fetch_market_data_reports_a_failed_symbol(fake):
    fake.fail_next("/v5/market/kline", 10001, "params error", symbol="ETHUSDT")

    result = fetch_market_data()

    assert list(result["failed"]) == ["ETHUSDT"]
    assert "10001" in result["failed"]["ETHUSDT"]
    assert result["symbols"] == 3
    assert result["candles"] == Candle.objects.count() == 72 + 10
    assert candle_counts() == {"BTCUSDT": 72, "SOLUSDT": 10}
