"""Unmodified ccxt against the fake Bybit v5 server: market data, trading, accounting and injected faults."""

from __future__ import annotations

import re
import time
from contextlib import suppress
from decimal import Decimal

import ccxt
import pytest

from tests.fakes.bybit import (
    ALL_RANDOM_FAULT_KINDS,
    BybitError,
    FakeBybit,
    fake_bybit,  # noqa: F401 - registers the shared fixture for test_shared_fixture
    make_ccxt_client,
)

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
DOGE = "DOGE/USDT:USDT"
HOUR_MS = 3_600_000
T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS  # an hour boundary


def seed(fake: FakeBybit) -> None:
    fake.add_instrument(
        "BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001", min_notional="5",
        max_qty="500", price="50000", turnover_24h="2000000000",
    )  # fmt: skip
    fake.add_instrument(
        "ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01", min_notional="5",
        max_qty="5000", price="3000", turnover_24h="900000000", funding_interval_minutes=240,
    )  # fmt: skip
    fake.add_instrument(
        "DOGEUSDT", base="DOGE", tick_size="0.00001", qty_step="1", min_qty="1", min_notional="5",
        max_qty="10000000", price="0.1", turnover_24h="50000000",
    )  # fmt: skip


@pytest.fixture
def fake():
    with FakeBybit(instrument_page_size=2) as server:
        seed(server)
        yield server
    assert server.errors == []


@pytest.fixture
def ex(fake):
    exchange = make_ccxt_client(fake.base_url, timeout_ms=5000)
    exchange.load_markets()
    fake.clear_requests()
    return exchange


# ---------------------------------------------------------------------------------------------------- market data


def test_load_markets_precision_limits_and_pagination(fake):
    fake.add_instrument("NEWUSDT", base="NEW", tick_size="0.0001", qty_step="10", min_qty="10", status="PreLaunch")
    exchange = make_ccxt_client(fake.base_url)
    markets = exchange.load_markets()

    assert set(markets) == {BTC, ETH, DOGE, "NEW/USDT:USDT"}
    btc, eth, doge = markets[BTC], markets[ETH], markets[DOGE]
    assert (btc["id"], btc["type"], btc["linear"], btc["settle"]) == ("BTCUSDT", "swap", True, "USDT")
    assert btc["active"] is True
    assert btc["precision"] == {"amount": 0.001, "price": 0.1}
    assert btc["limits"]["amount"] == {"min": 0.001, "max": 500.0}
    assert btc["limits"]["cost"]["min"] == 5.0
    assert eth["precision"] == {"amount": 0.01, "price": 0.01}
    assert eth["limits"]["amount"]["min"] == 0.01
    assert eth["info"]["fundingInterval"] == 240
    assert doge["precision"] == {"amount": 1.0, "price": 0.00001}
    assert doge["limits"]["amount"]["min"] == 1.0
    assert markets["NEW/USDT:USDT"]["active"] is False

    listing = fake.requests_to("/v5/market/instruments-info")
    assert [r.params.get("status") for r in listing] == [None, "PreLaunch", None]  # page 1, pre-launch, page 2
    assert listing[-1].params["cursor"] == "c2"
    assert fake.requests_to("/v5/asset/coin/query-info")  # fetchCurrencies with keys is served
    assert exchange.currencies["BTC"]["id"] == "BTC"


def test_delisted_instrument_is_inactive_or_gone(fake):
    fake.delist("ETHUSDT", status="Closed")
    fake.delist("DOGEUSDT", status="Closed", hidden=True)
    markets = make_ccxt_client(fake.base_url).load_markets()
    assert markets[ETH]["active"] is False
    assert markets[BTC]["active"] is True
    assert DOGE not in markets


def test_fetch_ohlcv_pages_oldest_first(fake, ex):
    rows = [(T0 + i * HOUR_MS, 100 + i, 101 + i, 99 + i, 100.5 + i, 10 + i, 1000 + i) for i in range(30)]
    fake.set_candles("BTCUSDT", "1h", rows)

    first = ex.fetch_ohlcv(BTC, "1h", since=T0, limit=10)
    assert [bar[0] for bar in first] == [T0 + i * HOUR_MS for i in range(10)]
    assert first[0] == [T0, 100.0, 101.0, 99.0, 100.5, 10.0]
    second = ex.fetch_ohlcv(BTC, "1h", since=first[-1][0] + HOUR_MS, limit=10)
    assert [bar[0] for bar in second] == [T0 + i * HOUR_MS for i in range(10, 20)]
    mid_bar = ex.fetch_ohlcv(BTC, "1h", since=T0 + 25 * HOUR_MS + 1, limit=3)  # ccxt aligns `since` upwards
    assert [bar[0] for bar in mid_bar] == [T0 + i * HOUR_MS for i in (26, 27, 28)]
    latest = ex.fetch_ohlcv(BTC, "1h", limit=5)
    assert [bar[0] for bar in latest] == [T0 + i * HOUR_MS for i in range(25, 30)]

    request = fake.requests_to("/v5/market/kline")[0]
    expected = {"symbol": "BTCUSDT", "start": str(T0), "limit": "10", "interval": "60", "category": "linear"}
    assert request.params == expected
    raw = ex.publicGetV5MarketKline({"category": "linear", "symbol": "BTCUSDT", "interval": "60", "limit": 3})
    assert [row[0] for row in raw["result"]["list"]] == [str(T0 + i * HOUR_MS) for i in (29, 28, 27)]  # newest first
    assert raw["result"]["list"][0][6] == "1029"  # turnover, as a string


def test_tickers(fake, ex):
    fake.set_ticker("BTCUSDT", 50100, 2_500_000_000, funding_rate="0.00012", next_funding_time_ms=T0 + 8 * HOUR_MS)
    tickers = ex.fetch_tickers()
    assert set(tickers) == {BTC, ETH, DOGE}
    btc = tickers[BTC]
    assert btc["last"] == 50100.0
    assert btc["quoteVolume"] == 2_500_000_000.0
    assert btc["baseVolume"] == pytest.approx(2_500_000_000 / 50100, rel=1e-6)
    assert btc["markPrice"] == 50100.0
    assert btc["info"]["fundingRate"] == "0.00012"
    assert btc["info"]["nextFundingTime"] == str(T0 + 8 * HOUR_MS)
    one = ex.fetch_ticker(ETH)
    assert (one["symbol"], one["last"], one["quoteVolume"]) == (ETH, 3000.0, 900_000_000.0)


def test_funding_rate_history(fake, ex):
    fake.set_funding_history("BTCUSDT", [(T0 + i * 8 * HOUR_MS, f"0.000{i + 1}") for i in range(5)])
    history = ex.fetch_funding_rate_history(BTC, since=T0 + 8 * HOUR_MS, limit=2, params={"until": T0 + 16 * HOUR_MS})
    assert [h["timestamp"] for h in history] == [T0 + i * 8 * HOUR_MS for i in (1, 2)]
    assert [h["fundingRate"] for h in history] == [0.0002, 0.0003]
    # like Bybit, the newest `limit` rows within [startTime, endTime] (ccxt sets endTime = since + limit intervals)
    history = ex.fetch_funding_rate_history(BTC, since=T0 + 8 * HOUR_MS, limit=3)
    assert [h["timestamp"] for h in history] == [T0 + i * 8 * HOUR_MS for i in (2, 3, 4)]


# ---------------------------------------------------------------------------------------------------- trading


def test_market_order_lifecycle_positions_trades_and_balance(fake, ex):
    created = ex.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "pair-1-a"})
    assert created["id"] and created["clientOrderId"] == "pair-1-a"
    assert created["status"] is None  # Bybit answers only {orderId, orderLinkId}

    assert ex.fetch_open_orders(BTC) == []
    [closed] = ex.fetch_closed_orders(BTC)
    assert (closed["id"], closed["status"]) == (created["id"], "closed")
    assert (closed["filled"], closed["remaining"], closed["average"]) == (0.02, 0.0, 50000.0)
    assert closed["fee"] == {"cost": 0.55, "currency": "USDT"}
    fetched = ex.fetch_order(created["id"], BTC, params={"acknowledged": True})
    assert fetched["status"] == "closed"
    assert ex.fetch_open_order(created["id"], BTC)["status"] == "closed"  # realtime by id sees recent closed orders

    [position] = ex.fetch_positions()
    assert (position["symbol"], position["side"]) == (BTC, "long")
    assert (position["contracts"], position["entryPrice"]) == (0.02, 50000.0)
    assert position["hedged"] is False

    # add at a higher price, then reduce at a profit: netted with a weighted average, realised PnL on reduction
    fake.set_price("BTCUSDT", 51000)
    ex.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "pair-1-b"})
    assert fake.position("BTCUSDT").avg_price == Decimal("50500")
    fake.set_price("BTCUSDT", 52000)
    ex.create_order(BTC, "market", "sell", 0.01, params={"clientOrderId": "pair-1-c", "reduceOnly": True})
    [position] = ex.fetch_positions([BTC])
    assert (position["contracts"], position["entryPrice"], position["unrealizedPnl"]) == (0.03, 50500.0, 45.0)

    trades = ex.fetch_my_trades(BTC)
    # Oldest first; orders placed within one millisecond tie on time, and ccxt's sort leaves ties in any order.
    assert [t["timestamp"] for t in trades] == sorted(t["timestamp"] for t in trades)
    assert sorted(t["order"] for t in trades) == sorted([created["id"], fake.order(order_link_id="pair-1-b").order_id,
                                                         fake.order(order_link_id="pair-1-c").order_id])  # fmt: skip
    [first] = [t for t in trades if t["order"] == created["id"]]
    assert first["fee"] == {"cost": 0.55, "currency": "USDT", "rate": 0.00055}
    assert first["takerOrMaker"] == "taker"
    assert [e.exec_type for e in fake.executions()] == ["Trade"] * 3

    fees = Decimal("0.02") * 50000 * Decimal("0.00055") + Decimal("0.02") * 51000 * Decimal("0.00055")
    fees += Decimal("0.01") * 52000 * Decimal("0.00055")
    realised = Decimal("0.01") * (52000 - 50500)
    assert fake.balance() == Decimal(10000) - fees + realised
    balance = ex.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(float(Decimal(10000) - fees + realised))
    assert balance["USDT"]["used"] == pytest.approx(0.03 * 50500 / 10)

    ex.create_order(BTC, "market", "sell", 0.03, params={"reduceOnly": True})
    assert ex.fetch_positions() == []
    assert fake.positions() == {}
    [flat] = ex.fetch_positions([BTC])
    assert flat["contracts"] == 0.0 and flat["side"] is None


def test_short_flip_and_realised_pnl(fake, ex):
    ex.create_order(ETH, "market", "sell", 1)
    fake.set_price("ETHUSDT", 2900)
    ex.create_order(ETH, "market", "buy", 3)  # closes the short at +100, opens a 2 ETH long at 2900
    position = fake.position("ETHUSDT")
    assert (position.size, position.avg_price) == (Decimal(2), Decimal(2900))
    fee = (Decimal(3000) + 3 * Decimal(2900)) * Decimal("0.00055")
    assert fake.balance() == Decimal(10000) + 100 - fee


def test_slippage_is_adverse_and_on_tick(fake, ex):
    fake.set_slippage(10, symbol="BTCUSDT")  # 10 bps
    ex.create_order(BTC, "market", "buy", 0.01)
    ex.create_order(BTC, "market", "sell", 0.01)
    buy, sell = fake.executions("BTCUSDT")
    assert (buy.exec_price, sell.exec_price) == (Decimal("50050"), Decimal("49950"))


def test_limit_order_rests_until_the_price_crosses(fake, ex):
    order = ex.create_order(ETH, "limit", "buy", 0.5, 2950, params={"clientOrderId": "lim-1"})
    [open_order] = ex.fetch_open_orders(ETH)
    assert (open_order["id"], open_order["status"], open_order["price"], open_order["remaining"]) == (
        order["id"], "open", 2950.0, 0.5,
    )  # fmt: skip
    assert ex.fetch_balance()["USDT"]["used"] == pytest.approx(0.5 * 2950 / 10)  # order margin
    assert ex.fetch_open_orders(ETH, params={"orderLinkId": "lim-1"})[0]["id"] == order["id"]
    assert ex.fetch_open_order(order["id"], ETH)["clientOrderId"] == "lim-1"
    fake.set_price("ETHUSDT", 2960)
    assert fake.order(order["id"]).status == "New"
    fills = fake.set_price("ETHUSDT", 2940)
    assert [(f.exec_price, f.is_maker) for f in fills] == [(Decimal(2950), True)]
    assert ex.fetch_open_orders(ETH) == []
    [trade] = ex.fetch_my_trades(ETH)
    assert trade["takerOrMaker"] == "maker" and trade["fee"]["rate"] == 0.0002

    resting = ex.create_order(ETH, "limit", "sell", 0.5, 3100)
    edited = ex.edit_order(resting["id"], ETH, "limit", "sell", 0.6, 3050)
    assert edited["id"] == resting["id"]
    assert (fake.order(resting["id"]).qty, fake.order(resting["id"]).price) == (Decimal("0.6"), Decimal(3050))
    ex.cancel_order(resting["id"], ETH)
    [cancelled] = ex.fetch_canceled_and_closed_orders(ETH, params={"orderStatus": "Cancelled"})
    assert (cancelled["id"], cancelled["status"]) == (resting["id"], "canceled")
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(resting["id"], ETH)


def test_marketable_limit_fills_as_taker_and_post_only_is_cancelled(fake, ex):
    taker = ex.create_order(BTC, "limit", "buy", 0.01, 50100)
    assert fake.order(taker["id"]).status == "Filled"
    assert fake.executions(order_id=taker["id"])[0].exec_price == Decimal(50000)
    post_only = ex.create_order(BTC, "limit", "buy", 0.01, 50100, params={"postOnly": True})
    assert fake.order(post_only["id"]).status == "Cancelled"


def test_min_notional_qty_step_and_min_qty_are_enforced(fake, ex):
    with pytest.raises(ccxt.InvalidOrder, match="170140"):
        ex.create_order(DOGE, "market", "buy", 10)  # 10 * 0.1 = 1 USDT < 5
    raw = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "positionIdx": 0}
    with pytest.raises(ccxt.InvalidOrder, match="170137"):
        ex.privatePostV5OrderCreate({**raw, "qty": "0.0015"})  # ccxt would have truncated it to the step
    with pytest.raises(ccxt.InvalidOrder, match="170136"):
        ex.privatePostV5OrderCreate({**raw, "qty": "0.0001"})
    with pytest.raises(ccxt.InvalidOrder, match="170135"):
        ex.privatePostV5OrderCreate({**raw, "qty": "501"})
    with pytest.raises(ccxt.InvalidOrder, match="170134"):
        ex.privatePostV5OrderCreate({**raw, "orderType": "Limit", "qty": "0.01", "price": "49999.95"})
    assert fake.orders() == []


def test_a_signature_refusal_echoes_what_the_request_sent(fake, ex):
    """Bybit's answers to a bad signature quote the request's own auth headers: the key, the timestamp and (10001
    "openapi sign params error!") the signature itself."""
    fake.auth_error_next("/v5/order/create", 10001)
    with pytest.raises(ccxt.BaseError) as params_error:
        ex.create_order(BTC, "market", "buy", 0.01)
    fake.auth_error_next("/v5/order/create", 10004)
    with pytest.raises(ccxt.AuthenticationError) as sign_error:
        ex.create_order(BTC, "market", "buy", 0.01)

    assert re.search(r"apiKey\[k\] apiSignature\[[0-9a-f]{64}\]: openapi sign params error!", str(params_error.value))
    assert re.search(r"error sign! origin_string\[\d{13}k5000category=linear\]", str(sign_error.value))
    assert fake.orders() == []
    with pytest.raises(ValueError, match="ret_code"):
        fake.auth_error_next(None, 10003)


def test_insufficient_balance(fake, ex):
    fake.set_balance("USDT", 40)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(BTC, "market", "buy", 0.01)  # 500 USDT at 10x needs 50 margin
    assert fake.orders() == []


def test_duplicate_order_link_id_is_rejected_and_creates_nothing(fake, ex):
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="OrderLinkedID is duplicate") as raised:
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    assert "170141" in str(raised.value)
    assert len(fake.orders()) == 1
    assert fake.position("BTCUSDT").size == Decimal("0.01")
    assert len(fake.requests_to("/v5/order/create", orderLinkId="dup-1")) == 2


def test_reduce_only_that_would_increase_is_rejected(fake, ex):
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})  # flat
    with pytest.raises(ccxt.InvalidOrder, match="current position is zero"):
        ex.create_order(BTC, "limit", "buy", 0.01, 49000, params={"reduceOnly": True})  # flat, either side
    assert fake.orders() == []  # a rejection creates nothing
    ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        ex.create_order(BTC, "market", "buy", 0.01, params={"reduceOnly": True})  # would add to the long
    ex.create_order(BTC, "market", "sell", 0.05, params={"reduceOnly": True})  # cut to the position size
    assert fake.position("BTCUSDT").size == 0
    assert fake.orders()[-1].qty == Decimal("0.01")


def test_position_idx_must_be_zero_in_one_way_mode(fake, ex):
    with pytest.raises(ccxt.BadRequest, match="position idx not match position mode"):
        ex.create_order(BTC, "market", "buy", 0.01, params={"positionIdx": 1})
    with pytest.raises(ccxt.BadRequest, match="10001"):
        ex.create_order(BTC, "market", "buy", 0.01, params={"hedged": True})
    assert fake.orders() == []


def test_set_leverage(fake, ex):
    ex.set_leverage(5, BTC)
    assert fake.position("BTCUSDT").leverage == 5
    with pytest.raises(ccxt.BadRequest, match="110043"):
        ex.set_leverage(5, BTC)
    with pytest.raises(ccxt.BadRequest):
        ex.set_leverage(500, BTC)
    ex.create_order(BTC, "market", "buy", 0.01)
    assert ex.fetch_positions([BTC])[0]["leverage"] == 5.0


def test_partial_fill_rests_then_completes_or_cancels(fake, ex):
    fake.partial_fill_next("BTCUSDT", "0.4")
    order = ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "part-1"})
    [open_order] = ex.fetch_open_orders(BTC)
    assert (open_order["id"], open_order["filled"], open_order["remaining"]) == (order["id"], 0.004, 0.006)
    assert fake.order(order["id"]).status == "PartiallyFilled"
    assert fake.position("BTCUSDT").size == Decimal("0.004")
    fake.fill_order(order_link_id="part-1")
    assert fake.order(order["id"]).status == "Filled"
    assert fake.position("BTCUSDT").size == Decimal("0.01")

    fake.partial_fill_next("BTCUSDT", "0.5")
    second = ex.create_order(BTC, "market", "buy", 0.01)
    ex.cancel_order(second["id"], BTC)
    assert fake.order(second["id"]).status == "PartiallyFilledCanceled"
    history = ex.fetch_canceled_and_closed_orders(BTC, params={"orderStatus": "PartiallyFilledCanceled"})
    assert [(o["id"], o["status"], o["filled"]) for o in history] == [(second["id"], "closed", 0.005)]
    assert fake.position("BTCUSDT").size == Decimal("0.015")
    closed = ex.fetch_canceled_and_closed_orders(BTC)
    assert {(o["id"], o["status"]) for o in closed} == {(order["id"], "closed"), (second["id"], "closed")}


# ---------------------------------------------------------------------------------------------------- faults


def test_timeout_after_accept_leaves_the_order_in_place(fake):
    slow = make_ccxt_client(fake.base_url, timeout_ms=300)
    slow.load_markets()
    fake.timeout_after_accept_next("/v5/order/create", delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        slow.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "slow-1"})
    assert time.monotonic() - started < 1.2

    [order] = fake.orders()
    assert (order.order_link_id, order.status) == ("slow-1", "Filled")
    [found] = slow.fetch_closed_orders(BTC, params={"orderLinkId": "slow-1"})  # the fault was one-shot
    assert (found["id"], found["status"]) == (order.order_id, "closed")
    with pytest.raises(ccxt.InvalidOrder):  # a blind retry is refused, not doubled
        slow.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "slow-1"})
    assert len(fake.orders()) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(502, ccxt.ExchangeNotAvailable), (503, ccxt.ExchangeNotAvailable), (504, ccxt.RequestTimeout),
     (429, ccxt.RateLimitExceeded), (403, ccxt.RateLimitExceeded)],
)  # fmt: skip
def test_http_errors_map_to_ccxt_classes(fake, ex, status, error):
    fake.http_error_next("/v5/order/create", status)
    with pytest.raises(error):
        ex.create_order(BTC, "market", "buy", 0.01)
    assert fake.orders() == []
    ex.create_order(BTC, "market", "buy", 0.01)  # one-shot
    assert len(fake.orders()) == 1


def test_http_error_on_market_data(fake, ex):
    fake.http_error_next("/v5/market/kline", 502, times=2)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_ohlcv(BTC, "1h", limit=5)
    assert ex.fetch_ohlcv(BTC, "1h", limit=5) == []


def test_rate_limit_and_ret_code_faults(fake, ex):
    fake.rate_limit_next("/v5/position/list")
    with pytest.raises(ccxt.RateLimitExceeded, match="Too many visits"):
        ex.fetch_positions()
    assert ex.fetch_positions() == []

    fake.reject_next_order("ETHUSDT", 110007, "ab not enough for new order")
    ex.create_order(BTC, "market", "buy", 0.01)  # another symbol: not affected
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(ETH, "market", "buy", 0.1)
    ex.create_order(ETH, "market", "buy", 0.1)

    fake.fail_next("/v5/order/create", 10016, "Service is busy", times=2, order_link_id="x-9")
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeError, match="10016"):
            ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "x-9"})
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "x-9"})
    assert [o.order_link_id for o in fake.orders()] == ["", "", "x-9"]
    assert fake.pending_faults() == []


def test_disconnect_maps_to_network_error(fake, ex):
    fake.disconnect_next("/v5/order/create", after_accept=True)
    with pytest.raises(ccxt.NetworkError):
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "cut-1"})
    assert fake.order(order_link_id="cut-1").status == "Filled"


def test_disconnect_before_applies_nothing(fake, ex):
    fake.disconnect_next("/v5/order/create", order_link_id="cut-2")
    with pytest.raises(ccxt.NetworkError):
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "cut-2"})
    assert fake.orders() == []
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "cut-2"})  # not a duplicate: none existed
    assert fake.order(order_link_id="cut-2").status == "Filled"


@pytest.mark.parametrize(
    ("ret_msg", "http_status", "error"),
    [("Internal System Error.", 200, ccxt.ExchangeError), ("Internal System Error.", 500, ccxt.ExchangeError),
     ("Request timeout, please try again later", 200, ccxt.RequestTimeout)],  # ccxt matches that text broadly
)  # fmt: skip
def test_error_after_accept_fills_the_order_then_answers_10016(fake, ex, ret_msg, http_status, error):
    fake.error_after_accept_next("/v5/order/create", ret_msg=ret_msg, order_link_id="e-1", http_status=http_status)
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "e-0"})  # another orderLinkId: answered
    with pytest.raises(ccxt.BaseError, match="10016") as raised:
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "e-1"})
    assert type(raised.value) is error  # exactly: 10016 "Internal System Error." is a plain ExchangeError

    order = fake.order(order_link_id="e-1")
    assert (order.status, order.cum_exec_qty) == ("Filled", Decimal("0.01"))
    assert fake.position("BTCUSDT").size == Decimal("0.02")
    [found] = ex.fetch_closed_orders(BTC, params={"orderLinkId": "e-1"})
    assert (found["id"], found["status"], found["filled"]) == (order.order_id, "closed", 0.01)
    assert [t["order"] for t in ex.fetch_my_trades(BTC, params={"orderLinkId": "e-1"})] == [order.order_id]
    assert fake.pending_faults() == []


def test_error_after_accept_on_cancel_and_pending_fault_labels(fake, ex):
    resting = ex.create_order(ETH, "limit", "buy", 0.5, 2900)
    fake.error_after_accept_next("/v5/order/cancel", times=2)
    fake.http_error_after_accept_next("/v5/order/create", 504, symbol="DOGEUSDT")
    fake.disconnect_next("/v5/order/create", after_accept=True)
    fake.fail_next("/v5/order/create", 10016, "Internal System Error.")
    assert [(kind, times) for kind, _, _, times in fake.pending_faults()] == [
        ("ret_after_accept", 2), ("http_after_accept", 1), ("disconnect_after_accept", 1), ("ret", 1),
    ]  # fmt: skip
    fake.clear_faults()
    fake.error_after_accept_next("/v5/order/cancel")
    with pytest.raises(ccxt.ExchangeError, match="Internal System Error"):
        ex.cancel_order(resting["id"], ETH)
    assert fake.order(resting["id"]).status == "Cancelled"
    with pytest.raises(ccxt.OrderNotFound):  # the retry learns it is gone
        ex.cancel_order(resting["id"], ETH)


@pytest.mark.parametrize(
    ("status", "error"),
    [(502, ccxt.ExchangeNotAvailable), (503, ccxt.ExchangeNotAvailable), (504, ccxt.RequestTimeout)],
)
def test_http_error_after_accept_fills_the_order(fake, ex, status, error):
    fake.http_error_after_accept_next("/v5/order/create", status, symbol="ETHUSDT", body="upstream lost")
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "h-0"})  # another symbol: answered
    with pytest.raises(error, match=f"{status}.*upstream lost"):
        ex.create_order(ETH, "market", "sell", 0.5, params={"clientOrderId": "h-1"})
    order = fake.order(order_link_id="h-1")
    assert (order.status, fake.position("ETHUSDT").size) == ("Filled", Decimal("-0.5"))
    [found] = ex.fetch_closed_orders(ETH, params={"orderLinkId": "h-1"})
    assert found["id"] == order.order_id
    assert fake.pending_faults() == []


def test_after_accept_disconnect_and_timeout_match_symbol_and_order_link_id(fake):
    fake.timeout_delay_s = 0.3
    fast = make_ccxt_client(fake.base_url, timeout_ms=200)
    fast.load_markets()
    fake.disconnect_next("/v5/order/create", after_accept=True, symbol="ETHUSDT", order_link_id="m-2")
    fake.timeout_after_accept_next("/v5/order/create", symbol="BTCUSDT", order_link_id="m-4")
    fast.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "m-1"})  # matches neither
    fast.create_order(ETH, "market", "buy", 0.1, params={"clientOrderId": "m-3"})  # symbol only: not matched
    assert len(fake.pending_faults()) == 2
    with pytest.raises(ccxt.NetworkError) as cut:
        fast.create_order(ETH, "market", "buy", 0.1, params={"clientOrderId": "m-2"})
    assert not isinstance(cut.value, ccxt.RequestTimeout)
    with pytest.raises(ccxt.RequestTimeout):
        fast.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "m-4"})
    assert {o.order_link_id: o.status for o in fake.orders()} == dict.fromkeys(("m-1", "m-3", "m-2", "m-4"), "Filled")
    assert fake.pending_faults() == []


# ---------------------------------------------------------------------------------------------------- random faults


@pytest.mark.parametrize(
    ("kind", "error", "applied"),
    [("ret_before", ccxt.ExchangeError, False), ("error_after_accept", ccxt.ExchangeError, True),
     ("http_before", ccxt.NetworkError, False), ("http_after_accept", ccxt.ExchangeNotAvailable, True),
     ("timeout_after_accept", ccxt.RequestTimeout, True), ("disconnect_before", ccxt.NetworkError, False),
     ("disconnect_after_accept", ccxt.NetworkError, True), ("rate_limit", ccxt.RateLimitExceeded, False),
     ("latency", None, True)],
)  # fmt: skip
def test_each_random_fault_kind(fake, kind, error, applied):
    fake.timeout_delay_s = 0.3
    fast = make_ccxt_client(fake.base_url, timeout_ms=200)
    fast.load_markets()
    fake.random_faults(3, probability=1, kinds=(kind,), paths=("/v5/order/create",), latency_s=(0.05, 0.05))
    fast.fetch_positions([BTC])  # not a path of this mode
    started = time.monotonic()
    if error is None:
        fast.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "k-1"})
        assert time.monotonic() - started >= 0.05
    else:
        with pytest.raises(error):
            fast.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "k-1"})
    order = fake.order(order_link_id="k-1")
    assert (order.status if order else None) == ("Filled" if applied else None)
    [injected] = fake.random_fault_log()
    assert (injected.method, injected.path, injected.kind, injected.order_link_id) == (
        "POST", "/v5/order/create", kind, "k-1",
    )  # fmt: skip
    assert fake.random_fault_counts() == {k: int(k == kind) for k in ALL_RANDOM_FAULT_KINDS}

    fake.stop_random_faults()
    fast.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "k-2"})
    assert fake.order(order_link_id="k-2").status == "Filled"
    assert fake.random_fault_counts()[kind] == 1  # kept after the stop


def test_random_ret_and_http_before_draw_their_codes(fake, ex):
    fake.random_faults(5, probability=1, kinds=("ret_before", "http_before"), paths=("/v5/order/create",))
    seen: dict[str, type] = {}
    for i in range(12):
        with pytest.raises(ccxt.BaseError) as raised:
            ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": f"d-{i}"})
        seen[fake.random_fault_log()[-1].detail] = type(raised.value)
    assert seen == {
        "10002": ccxt.InvalidNonce, "10016": ccxt.ExchangeError,
        "502": ccxt.ExchangeNotAvailable, "503": ccxt.ExchangeNotAvailable, "504": ccxt.RequestTimeout,
    }  # fmt: skip
    assert fake.orders() == []
    counts = fake.random_fault_counts()
    assert counts["ret_before"] + counts["http_before"] == 12


def test_random_error_after_accept_on_a_read_is_a_ret_before_and_scheduled_faults_win(fake, ex):
    fake.random_faults(1, probability=1, kinds=("error_after_accept",), paths=("/v5/position/list",))
    with pytest.raises(ccxt.ExchangeError):
        ex.fetch_positions([BTC])
    assert fake.random_fault_counts()["ret_before"] == 1
    assert fake.random_fault_counts()["error_after_accept"] == 0

    fake.random_faults(1, probability=1, kinds=("rate_limit",))
    fake.fail_next("/v5/order/create", 110007, "ab not enough for new order")
    with pytest.raises(ccxt.InsufficientFunds):  # the scheduled fault, not the random rate limit
        ex.create_order(BTC, "market", "buy", 0.01)
    assert fake.random_fault_counts()["rate_limit"] == 0
    with pytest.raises(ccxt.RateLimitExceeded):
        ex.create_order(BTC, "market", "buy", 0.01)
    assert fake.random_fault_counts()["rate_limit"] == 1
    assert fake.orders() == []


def test_random_faults_probability_zero_and_one_and_stop(fake, ex):
    fake.random_faults(11, probability=0)
    for i in range(4):
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": f"z-{i}"})
        ex.fetch_positions([BTC])
        ex.fetch_balance()
    assert sum(fake.random_fault_counts().values()) == 0
    assert fake.random_fault_log() == []

    before_kinds = ("ret_before", "http_before", "disconnect_before", "rate_limit")
    fake.random_faults(11, probability=1, kinds=before_kinds)
    for i in range(6):
        with pytest.raises(ccxt.BaseError):
            ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": f"o-{i}"})
        with pytest.raises(ccxt.BaseError):
            ex.fetch_open_orders(BTC)
    assert ex.fetch_ticker(BTC)["last"] == 50000.0  # market data is not a path of the mode
    assert len(fake.orders()) == 4  # no "before" fault applied anything
    counts = fake.random_fault_counts()
    assert sum(counts.values()) == 12
    assert set(k for k, n in counts.items() if n) <= set(before_kinds)

    fake.stop_random_faults()
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "o-0"})
    assert ex.fetch_positions([BTC])[0]["contracts"] == 0.05
    assert sum(fake.random_fault_counts().values()) == 12
    fake.random_faults(11, probability=0)  # a new mode restarts the counts and the log
    assert sum(fake.random_fault_counts().values()) == 0
    assert fake.random_fault_log() == []


def _soak(seed_value: int) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    """A fixed single-threaded sequence of requests under random faults; returns the log and the counts."""
    kinds = tuple(k for k in ALL_RANDOM_FAULT_KINDS if k != "timeout_after_accept")  # keep it fast
    with FakeBybit() as server:
        seed(server)
        client = make_ccxt_client(server.base_url)
        client.load_markets()
        server.random_faults(seed_value, probability=0.5, kinds=kinds, latency_s=(0.0, 0.005))
        for i in range(10):
            side = "buy" if i % 2 == 0 else "sell"
            calls = (
                lambda: client.create_order(BTC, "market", side, 0.01, params={"clientOrderId": f"s-{i}"}),  # noqa: B023
                lambda: client.fetch_positions([BTC]),
                lambda: client.fetch_open_orders(BTC),
                lambda: client.fetch_balance(),
            )
            for call in calls:
                with suppress(ccxt.BaseError):
                    call()
        assert server.errors == []
        log = [tuple(fault) for fault in server.random_fault_log()]
        return log, server.random_fault_counts()


def test_random_faults_are_reproducible_with_a_seed():
    log, counts = _soak(7)
    assert _soak(7) == (log, counts)
    assert sum(counts.values()) == len(log) > 10
    assert len([kind for kind, n in counts.items() if n]) >= 5
    assert _soak(8)[0] != log


def test_random_faults_validate_their_arguments(fake):
    with pytest.raises(ValueError, match="kinds"):
        fake.random_faults(1, probability=0.5, kinds=("meteor",))
    with pytest.raises(ValueError, match="probability"):
        fake.random_faults(1, probability=1.5)
    with pytest.raises(ValueError, match="paths"):
        fake.random_faults(1, probability=0.5, paths=("/v5/order/creat",))
    with pytest.raises(ValueError, match="latency_s"):
        fake.random_faults(1, probability=0.5, latency_s=(0.2, 0.1))


# ---------------------------------------------------------------------------------------------------- by hand


def test_close_position_by_hand(fake, ex):
    assert fake.close_position_by_hand("BTCUSDT") is None  # flat: nothing to do
    ex.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "bot-1"})
    fake.set_price("BTCUSDT", 51000)
    before = fake.balance()

    execution = fake.close_position_by_hand("BTCUSDT")
    assert execution is not None
    assert execution.order_link_id.startswith("manual-") and len(execution.order_link_id) == len("manual-") + 8
    assert (execution.side, execution.exec_qty, execution.exec_price) == ("Sell", Decimal("0.02"), Decimal(51000))
    fee = Decimal("0.02") * 51000 * Decimal("0.00055")
    assert (execution.exec_fee, execution.is_maker, execution.exec_pnl) == (fee, False, Decimal(20))
    assert fake.position("BTCUSDT").size == 0
    assert fake.balance() == before + 20 - fee
    order = fake.order(order_link_id=execution.order_link_id)
    assert (order.status, order.reduce_only, order.order_type) == ("Filled", True, "Market")

    closed = ex.fetch_closed_orders(BTC)  # visible to the bot like any order
    assert {o["clientOrderId"] for o in closed} == {"bot-1", execution.order_link_id}
    assert {t["order"] for t in ex.fetch_my_trades(BTC)} == {o["id"] for o in closed}
    assert ex.fetch_positions() == []
    with pytest.raises(ccxt.InvalidOrder, match="110017"):  # the bot's own close now has nothing to reduce
        ex.create_order(BTC, "market", "sell", 0.02, params={"reduceOnly": True, "clientOrderId": "bot-2"})
    assert fake.order(order_link_id="bot-2") is None
    assert [r.params["orderLinkId"] for r in fake.requests_to("/v5/order/create")] == ["bot-1", "bot-2"]


def test_open_position_by_hand(fake, ex):
    fake.partial_fill_next("ETHUSDT", "0.5")  # meant for the bot's next order: a person's order leaves it
    execution = fake.open_position_by_hand("ETHUSDT", "sell", "1.5")
    assert (execution.side, execution.exec_qty, execution.exec_price) == ("Sell", Decimal("1.5"), Decimal(3000))
    assert execution.exec_fee == Decimal("1.5") * 3000 * Decimal("0.00055")
    assert execution.order_link_id.startswith("manual-")
    [position] = ex.fetch_positions()
    assert (position["side"], position["contracts"]) == ("short", 1.5)
    assert len(fake.pending_faults()) == 1

    fake.open_position_by_hand("ETHUSDT", "Buy", 1, order_link_id="ui-2")
    assert fake.position("ETHUSDT").size == Decimal("-0.5")
    assert fake.executions(order_link_id="ui-2")[0].closed_size == Decimal(1)
    closing = fake.close_position_by_hand("ETHUSDT", order_link_id="ui-3")
    assert (closing.side, closing.exec_qty, closing.order_link_id) == ("Buy", Decimal("0.5"), "ui-3")
    assert {t["order"] for t in ex.fetch_my_trades(ETH)} == {o.order_id for o in fake.orders("ETHUSDT")}

    with pytest.raises(BybitError) as refused:
        fake.open_position_by_hand("DOGEUSDT", "buy", 10)  # 1 USDT: below the minimum notional
    assert refused.value.code == 170140
    with pytest.raises(ValueError, match="side"):
        fake.open_position_by_hand("ETHUSDT", "long", 1)
    ex.create_order(ETH, "market", "buy", 1)  # the bot's order takes the partial fill
    assert fake.orders("ETHUSDT")[-1].status == "PartiallyFilled"


def test_unknown_path_answers_404_naming_the_path(fake, ex):
    with pytest.raises(ccxt.BadRequest, match="no route for GET /v5/market/orderbook"):
        ex.fetch_order_book(BTC)


# ---------------------------------------------------------------------------------------------------- modes and helpers


def test_demo_mode_client_works_against_the_fake(fake):
    demo = make_ccxt_client(fake.base_url, demo=True)
    assert demo.options["enableDemoTrading"] is True
    assert demo.urls["api"]["private"] == fake.base_url
    demo.load_markets()
    assert not fake.requests_to("/v5/asset/coin/query-info")  # ccxt skips fetchCurrencies in demo mode
    demo.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "demo-1"})
    assert demo.fetch_positions()[0]["contracts"] == 0.01
    assert demo.fetch_balance()["USDT"]["total"] < 10000


def test_funding_settlement_moves_the_wallet(fake, ex):
    ex.create_order(BTC, "market", "buy", 0.02)
    before = fake.balance()
    paid = fake.settle_funding("BTCUSDT", "0.0001", time_ms=T0)
    assert paid == Decimal("0.02") * 50000 * Decimal("0.0001")
    assert fake.balance() == before - paid
    assert [e.exec_type for e in fake.executions()] == ["Trade", "Funding"]
    assert len(ex.fetch_my_trades(BTC)) == 1  # ccxt asks for execType=Trade


def test_delist_closes_positions_and_cancels_orders(fake, ex):
    ex.create_order(ETH, "market", "buy", 1)
    ex.create_order(ETH, "limit", "buy", 1, 2000)
    fake.set_price("ETHUSDT", 3100)
    fake.delist("ETHUSDT")
    assert fake.position("ETHUSDT").size == 0
    assert [o.status for o in fake.orders("ETHUSDT")] == ["Filled", "Cancelled"]
    assert fake.executions("ETHUSDT")[-1].exec_type == "Delivery"
    with pytest.raises(ccxt.BadRequest):
        ex.create_order(ETH, "market", "buy", 1)


def test_requests_log_and_context_manager():
    with FakeBybit() as server:
        server.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001", price=1)
        client = make_ccxt_client(server.base_url, fetch_currencies=False)
        client.fetch_ticker(BTC)
        assert [(r.method, r.path) for r in server.requests] == [
            ("GET", "/v5/market/instruments-info"),
            ("GET", "/v5/market/instruments-info"),
            ("GET", "/v5/market/tickers"),
        ]
        method, path, params = server.requests[-1]
        assert (method, path, params) == ("GET", "/v5/market/tickers", {"symbol": "BTCUSDT", "category": "linear"})
        url = server.base_url
    with pytest.raises(ccxt.NetworkError):
        make_ccxt_client(url, timeout_ms=500).fetch_time()


def test_shared_fixture(request):
    server = request.getfixturevalue("fake_bybit")
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.balance() == Decimal(10000)
