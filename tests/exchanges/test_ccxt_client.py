"""The generic ccxt adapter (client building, public market data), driven through unmodified ccxt against the fake
Bybit v5 server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchanges.ccxt_client import CcxtExchange, build_ccxt_client
from exchanges.errors import OrderOutcomeUnknown
from tests.fakes.bybit import FakeBybit

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z

# 2xx answers a gateway, a CDN or a cut connection can hand over instead of the exchange's JSON. ccxt reads each of
# them as an empty answer: no instrument, no ticker, no candle.
UNREADABLE_BODIES = {
    "html-page": "<html><body><h1>Maintenance</h1></body></html>",
    "truncated-json": '{"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"symbol":"BTC',
    "empty-body": "",
    "no-result": '{"retCode":0,"retMsg":"OK","retExtInfo":{},"time":1}',
}


@pytest.fixture
def fake():
    with FakeBybit() as server:
        server.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                              price="50000", turnover_24h="2000000000")  # fmt: skip
        server.set_candles("BTCUSDT", "1h", [(T0 + i * H, "10", "11", "9", "10.5", "3") for i in range(5)])
        yield server
    assert server.errors == []


@pytest.fixture
def client(fake) -> CcxtExchange:
    return CcxtExchange(build_ccxt_client("bybit", base_url=fake.base_url, enable_rate_limit=False, timeout_ms=2000))


def test_the_reads_work_on_readable_answers(client):
    assert [spec.symbol for spec in client.linear_instruments()] == ["BTCUSDT"]
    assert list(client.turnover_24h()) == ["BTCUSDT"]
    assert len(client.fetch_candles("BTC/USDT:USDT", "1h", since_ms=T0, limit=1000)) == 5


@pytest.mark.parametrize("body", UNREADABLE_BODIES.values(), ids=UNREADABLE_BODIES.keys())
@pytest.mark.parametrize(
    ("path", "read"),
    [
        ("/v5/market/instruments-info", lambda client: client.linear_instruments()),
        ("/v5/market/tickers", lambda client: client.turnover_24h()),
        ("/v5/market/kline", lambda client: client.fetch_candles("BTC/USDT:USDT", "1h", since_ms=T0, limit=1000)),
    ],
    ids=["instruments", "tickers", "candles"],
)
def test_an_unreadable_answer_is_an_unknown_outcome_not_an_empty_one(fake, client, path, read, body):
    """An answer that can't be read proves nothing: an empty instrument list would delist the whole universe, an
    empty ticker list drop it below the minimum turnover."""
    client.linear_instruments()  # markets loaded: the fault hits the read under test
    fake.http_error_next(path, 200, body=body, times=2)

    with pytest.raises(OrderOutcomeUnknown, match="an answer that can't be read") as info:
        read(client)

    assert info.value.retryable


def test_the_largest_order_is_the_largest_market_order(fake, client):
    """The bots place market orders, which Bybit caps at maxMktOrderQty, below maxOrderQty (a limit order's cap): an
    order sized up to maxOrderQty would be refused."""
    fake.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01", max_qty="7240",
                        max_mkt_qty="724", price="3000")  # fmt: skip

    specs = {spec.symbol: spec for spec in client.linear_instruments()}

    assert specs["ETHUSDT"].max_qty == Decimal("724")
    assert specs["BTCUSDT"].max_qty == Decimal("1000000")  # no lower market cap: maxOrderQty
