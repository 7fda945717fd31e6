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


def test_funding_rates_of_a_window_with_more_than_one_page_are_all_read(fake, client):
    """Bybit answers a funding window's newest 200 settlements: a window holding more (hourly settlements where the
    caller counted 8-hourly ones) is read page by page back to its start, not cut to its newest 200."""
    hourly = [(T0 + i * H, f"0.0000{i % 10}") for i in range(450)]
    fake.set_funding_history("BTCUSDT", hourly)

    rates = client.fetch_funding_rates("BTC/USDT:USDT", since_ms=T0 + 10 * H, until_ms=T0 + 440 * H)

    assert [ts for ts, _ in rates] == [T0 + i * H for i in range(10, 441)]
    assert rates[0][1] == Decimal("0.00000") and isinstance(rates[0][1], Decimal)
    windows = [(int(r.params["startTime"]), int(r.params["endTime"]))
               for r in fake.requests_to("/v5/market/funding/history")]  # fmt: skip
    assert windows == [(T0 + 10 * H, T0 + 440 * H), (T0 + 10 * H, T0 + 241 * H - 1), (T0 + 10 * H, T0 + 41 * H - 1)]
