"""The order side of the ccxt adapter, driven through unmodified ccxt against the fake Bybit v5 server.

Every test runs twice: with a demo-trading client and with a real-money client, both built for an (unsaved)
ExchangeAccount by account_exchange and pointed at the fake through base_url_override.
"""

from __future__ import annotations

import re
from decimal import Decimal
from itertools import pairwise

import pytest

from core import secrets
from exchanges.errors import (
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeError,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    OrderOutcomeUnknown,
    PermanentExchangeError,
    RateLimited,
    TemporaryExchangeError,
)
from exchanges.retry import RetryingExchange
from exchanges.types import BalanceState, FillState, OrderAck, OrderState, PositionState
from execution.models import ExchangeAccount
from execution.selectors import Credentials
from execution.venues import account_exchange
from tests.fakes.bybit import DEFAULT_TAKER_FEE_RATE, FakeBybit

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
CREATE = "/v5/order/create"
API_KEY = "Kx7Q2mZp9LwV3nB8"
API_SECRET = "s3cr3t-T0k3n-0f-th3-4cc0unt"




@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """A private registry of secrets for each test (the module keeps one for the whole process)."""
    monkeypatch.setattr(secrets, "_registered_secrets", set())
    return secrets


def seed(fake: FakeBybit) -> None:
    fake.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001", price="50000")
    fake.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="3000")


@pytest.fixture
def fake():
    with FakeBybit(timeout_delay_s=1.5) as server:
        seed(server)
        yield server
    assert server.errors == []


def make_account(fake: FakeBybit, mode: str = "real", **overrides) -> ExchangeAccount:
    fields = {"name": f"acc-{mode}", "exchange": "bybit", "mode": mode, "capital": Decimal(1000),
              "per_trade_budget": Decimal(100), "base_url_override": fake.base_url}  # fmt: skip
    fields.update(overrides)
    return ExchangeAccount(**fields)


@pytest.fixture(params=["demo", "real"])
def mode(request):
    return request.param


@pytest.fixture
def make_exchange(fake, mode):
    def build(timeout_ms: int = 3000, credentials: Credentials | None = None):
        exchange = account_exchange(
            make_account(fake, mode), credentials or Credentials("key-of-the-test", "secret-of-the-test"),
            timeout_ms=timeout_ms, enable_rate_limit=False,
        )  # fmt: skip
        exchange.linear_instruments()  # markets loaded, as a bot does on start
        fake.clear_requests()
        return exchange

    return build


@pytest.fixture
def ex(make_exchange):
    return make_exchange()


def buy_btc(ex, client_order_id="t1-y-open", qty="0.01", **kwargs) -> OrderAck:
    return ex.place_order(symbol=BTC, side="buy", qty=Decimal(qty), client_order_id=client_order_id, **kwargs)


# ---------------------------------------------------------------------------------------------------- the client


def test_demo_and_real_clients(ex, mode):
    assert ex._client.options.get("enableDemoTrading", False) is (mode == "demo")
    assert set(ex._client.urls["api"].values()) == {ex._client.urls["api"]["public"]}
    assert ex._client.urls["api"]["public"].startswith("http://127.0.0.1:")


def test_loading_markets_signs_no_asset_request(make_exchange, fake, mode):
    """ccxt signs GET /v5/asset/coin/query-info in load_markets on the live API only (demo trading skips it): the
    adapter doesn't ask it, so a key without asset permissions trades on real money as it did on demo."""
    fake.fail_next("/v5/asset/coin/query-info", 10005, "Permission denied, please check your API key permissions.")

    ex = make_exchange()
    buy_btc(ex)

    assert [path for _, path, _, _ in fake.pending_faults()] == ["/v5/asset/coin/query-info"]  # never asked
    assert fake.position("BTCUSDT").size == Decimal("0.01")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"mode": "paper"}, "'paper' mode"), ({"position_mode": "hedge"}, "one-way"), ({"exchange": "binance"}, "bybit")],
)
def test_account_exchange_refuses_what_it_cannot_trade(fake, overrides, message):
    account = make_account(fake, **({"mode": "real"} | overrides))
    with pytest.raises(NotSupported, match=message):
        account_exchange(account, Credentials("k", "s"), enable_rate_limit=False)


# ---------------------------------------------------------------------------------------------------- placing


def test_market_order_fills(ex, fake):
    ack = buy_btc(ex)

    assert ack == OrderAck(fake.orders()[0].order_id, "t1-y-open", BTC, existing=False, state=None)
    (request,) = fake.requests_to(CREATE)
    assert request.params["orderLinkId"] == "t1-y-open"
    assert request.params["positionIdx"] == 0
    assert request.params["qty"] == "0.01"
    assert request.params["reduceOnly"] is False
    assert (request.params["side"], request.params["orderType"]) == ("Buy", "Market")

    state = ex.order_by_client_id(BTC, "t1-y-open")

    assert isinstance(state, OrderState)
    assert (state.status, state.is_open, state.side, state.order_type) == ("filled", False, "buy", "market")
    assert state.exchange_order_id == ack.exchange_order_id
    assert (state.qty, state.filled_qty, state.remaining_qty) == (Decimal("0.01"), Decimal("0.01"), 0)
    assert isinstance(state.avg_price, Decimal) and state.avg_price == Decimal(50000)
    assert isinstance(state.fee, Decimal)
    assert state.fee == Decimal("0.01") * Decimal(50000) * Decimal("0.00055") == Decimal("0.275")
    assert (state.fee_currency, state.reduce_only, state.limit_price) == ("USDT", False, None)


def test_order_lookup_uses_order_link_id_lists(ex, fake):
    buy_btc(ex)
    fake.clear_requests()

    assert ex.order_by_client_id(BTC, "t1-y-open").status == "filled"
    assert ex.order_by_client_id(BTC, "never-placed") is None

    # An order none of the lists shows is looked for among the executions too, before "none" is answered.
    assert {r.path for r in fake.requests} == {"/v5/order/realtime", "/v5/order/history", "/v5/execution/list"}
    assert all(r.params["orderLinkId"] in ("t1-y-open", "never-placed") for r in fake.requests)
    assert [r.path for r in fake.requests if r.params["orderLinkId"] == "never-placed"] == [
        "/v5/order/realtime", "/v5/order/history", "/v5/execution/list"]


def test_a_list_that_cant_be_read_does_not_end_the_lookup(ex, fake):
    """The open-orders list answers 10016 (an outage of that endpoint only): the history still proves the order; an
    order no readable source shows is not called absent while one source failed."""
    buy_btc(ex)
    fake.fail_next("/v5/order/realtime", 10016, "Internal server error", times=10)
    state = ex.order_by_client_id(BTC, "t1-y-open")
    assert state is not None and (state.status, state.filled_qty) == ("filled", Decimal("0.01"))
    with pytest.raises(ExchangeError):
        ex.order_by_client_id(BTC, "never-placed")


def test_an_order_only_the_executions_show_is_found_there(ex, fake, monkeypatch):
    """The order lists lag (or no longer hold it): its executions prove it existed and filled."""
    buy_btc(ex, qty="0.02")
    monkeypatch.setattr(fake, "_filter_orders", lambda params: [])
    state = ex.order_by_client_id(BTC, "t1-y-open")
    assert state is not None and not state.is_open
    assert (state.status, state.filled_qty, state.side) == ("filled", Decimal("0.02"), "buy")


def test_closed_order_beyond_the_realtime_window_is_found_in_history(ex, fake, monkeypatch):
    monkeypatch.setattr("tests.fakes.bybit.RECENT_ORDERS_VISIBLE_TO_REALTIME", 1)
    buy_btc(ex)
    buy_btc(ex, client_order_id="t2-y-open")  # the only one the realtime list still shows
    fake.clear_requests()

    assert ex.order_by_client_id(BTC, "t1-y-open").status == "filled"
    assert [r.path for r in fake.requests] == ["/v5/order/realtime", "/v5/order/history"]


def test_fills_listed(ex, fake):
    fake.set_slippage(2)  # 50000 * 1.0002 = 50010
    ack = buy_btc(ex, qty="0.02")

    fills = ex.fills_of(BTC, "t1-y-open")

    (execution,) = fake.executions(order_link_id="t1-y-open")
    assert fills == [
        FillState(
            exec_id=execution.exec_id, exchange_order_id=ack.exchange_order_id, client_order_id="t1-y-open",
            symbol=BTC, side="buy", qty=Decimal("0.02"), price=Decimal(50010),
            fee=Decimal("0.02") * Decimal(50010) * DEFAULT_TAKER_FEE_RATE, fee_currency="USDT", is_maker=False,
            time_ms=execution.exec_time_ms,
        )
    ]  # fmt: skip
    assert fills[0].filled_at.timestamp() * 1000 == pytest.approx(execution.exec_time_ms)
    assert ex.fills_of(BTC, exchange_order_id=ack.exchange_order_id) == fills
    assert ex.fills_of(BTC, "another-order") == []
    with pytest.raises(ValueError, match="exactly one"):
        ex.fills_of(BTC)


def test_fills_of_a_partly_filled_order_and_its_completion(ex, fake):
    fake.partial_fill_next("BTCUSDT", "0.5")
    buy_btc(ex)
    fake.set_price("BTCUSDT", "50100")
    fake.fill_order(order_link_id="t1-y-open")

    fills = ex.fills_of(BTC, "t1-y-open")

    assert [(f.qty, f.price) for f in fills] == [(Decimal("0.005"), Decimal(50000)), (Decimal("0.005"), Decimal(50100))]
    state = ex.order_by_client_id(BTC, "t1-y-open")
    assert (state.status, state.filled_qty, state.avg_price) == ("filled", Decimal("0.01"), Decimal(50050))
    assert state.fee == sum(f.fee for f in fills)


DAY_MS = 24 * 60 * 60 * 1000


def _exchange_clock_ahead(fake, monkeypatch, ms: int) -> None:
    """The exchange's clock moves ``ms`` on (a bot that was down that long): its default execution window follows."""
    real_clock = fake._clock
    monkeypatch.setattr(fake, "_clock", lambda: real_clock() + ms)


def test_fills_of_an_order_older_than_seven_days_need_a_start(ex, fake, monkeypatch):
    """Bybit's execution list answers only the last 7 days when no time is given: the fills of an order placed 8
    days ago are read from a start at or before it, which also reaches executions 7 days past our own clock."""
    buy_btc(ex, qty="0.02")
    (execution,) = fake.executions(order_link_id="t1-y-open")
    _exchange_clock_ahead(fake, monkeypatch, 8 * DAY_MS)

    assert ex.fills_of(BTC, "t1-y-open") == []  # the exchange's default window: the last 7 days
    fills = ex.fills_of(BTC, "t1-y-open", since_ms=execution.exec_time_ms - 60_000)
    assert [(f.exec_id, f.qty) for f in fills] == [(execution.exec_id, Decimal("0.02"))]


def test_fills_of_walk_seven_day_windows_from_the_start(ex, fake):
    """A start weeks back is read window by window (endTime - startTime <= 7 days each, Bybit's limit) up to now."""
    buy_btc(ex, qty="0.02")
    (execution,) = fake.executions(order_link_id="t1-y-open")
    fake.clear_requests()

    fills = ex.fills_of(BTC, "t1-y-open", since_ms=execution.exec_time_ms - 20 * DAY_MS)

    assert [f.exec_id for f in fills] == [execution.exec_id]
    windows = [(int(r.params["startTime"]), int(r.params["endTime"])) for r in fake.requests_to("/v5/execution/list")]
    assert len(windows) == 3 and all(end - start <= 7 * DAY_MS for start, end in windows)
    assert windows[0][0] == execution.exec_time_ms - 20 * DAY_MS and windows[-1][1] >= execution.exec_time_ms
    assert all(later[0] == earlier[1] + 1 for earlier, later in pairwise(windows))


def test_an_order_only_older_executions_show_is_found_from_its_start(ex, fake, monkeypatch):
    """The lists no longer hold an order placed 8 days ago: its executions, read from the start given, prove it."""
    buy_btc(ex, qty="0.02")
    (execution,) = fake.executions(order_link_id="t1-y-open")
    monkeypatch.setattr(fake, "_filter_orders", lambda params: [])
    _exchange_clock_ahead(fake, monkeypatch, 8 * DAY_MS)

    assert ex.order_by_client_id(BTC, "t1-y-open") is None  # the last 7 days hold none of it
    state = ex.order_by_client_id(BTC, "t1-y-open", since_ms=execution.exec_time_ms - 60_000)
    assert state is not None and (state.status, state.filled_qty) == ("filled", Decimal("0.02"))


def test_executions_read_past_our_clock(ex, fake, monkeypatch):
    """The exchange's clock a few seconds ahead of ours: the execution list's last window still reaches its newest
    executions (a close by hand just now), as fills_of's does, instead of ending at our clock."""
    _exchange_clock_ahead(fake, monkeypatch, 5_000)
    buy_btc(ex)
    fake.close_position_by_hand("BTCUSDT")
    since = fake.now_ms() - 60_000

    executions = ex.executions(BTC, since_ms=since)

    assert [(e.side, e.qty) for e in executions] == [("buy", Decimal("0.01")), ("sell", Decimal("0.01"))]
    assert executions[1].client_order_id.startswith("manual-")


def test_positions_are_signed(ex, fake):
    buy_btc(ex)
    ex.place_order(symbol=ETH, side="sell", qty=Decimal("0.5"), client_order_id="t1-x-open")
    fake.set_price("BTCUSDT", "51000")
    fake.set_price("ETHUSDT", "2900")

    positions = ex.positions()

    assert positions == [
        PositionState(BTC, Decimal("0.01"), Decimal(50000), Decimal(51000), Decimal(10), Decimal(10)),
        PositionState(ETH, Decimal("-0.5"), Decimal(3000), Decimal(2900), Decimal(50), Decimal(10)),
    ]
    assert [p.side for p in positions] == ["long", "short"]
    assert ex.positions([ETH]) == positions[1:]


def test_flat_positions_are_absent(ex):
    buy_btc(ex)
    ex.place_order(symbol=BTC, side="sell", qty=Decimal("0.01"), client_order_id="t1-y-close", reduce_only=True)

    assert ex.positions() == []
    assert ex.positions([BTC, ETH]) == []


def test_balance(ex, fake):
    assert ex.balance() == BalanceState("USDT", Decimal(10000), Decimal(10000), Decimal(10000), Decimal(0))
    buy_btc(ex)
    fake.set_price("BTCUSDT", "49000")

    balance = ex.balance("USDT")

    assert balance.equity == fake.equity() == Decimal("9989.725")
    assert balance.wallet_balance == fake.balance() == Decimal("9999.725")
    assert balance.available == fake.available_balance()
    assert balance.unrealised_pnl == Decimal(-10)
    assert ex.balance("USDC").equity == 0


# ---------------------------------------------------------------------------------------------------- idempotency


@pytest.mark.parametrize("code", [170141, 110072])
def test_duplicate_client_order_id_returns_the_existing_order(make_exchange, fake, code):
    fake.duplicate_order_link_id_code = code
    ex = make_exchange()
    first = buy_btc(ex)

    second = buy_btc(ex)

    assert len(fake.requests_to(CREATE)) == 2
    assert len(fake.orders()) == 1
    assert second.existing is True
    assert second.exchange_order_id == first.exchange_order_id
    assert (second.state.status, second.state.filled_qty) == ("filled", Decimal("0.01"))
    assert fake.position("BTCUSDT").size == Decimal("0.01")


def test_duplicate_client_order_id_of_a_different_order_is_an_error(ex, fake):
    buy_btc(ex)
    with pytest.raises(DuplicateClientOrderId, match="taken by a different order"):
        ex.place_order(symbol=BTC, side="sell", qty=Decimal("0.01"), client_order_id="t1-y-open")
    assert len(fake.orders()) == 1


def test_client_order_id_taken_on_another_symbol_is_a_permanent_duplicate(ex, fake):
    ex.place_order(symbol=ETH, side="buy", qty=Decimal("0.1"), client_order_id="t1-y-open")

    with pytest.raises(DuplicateClientOrderId) as info:
        buy_btc(ex)

    assert not info.value.retryable
    assert len(fake.orders()) == 1


def test_timeout_after_accept_returns_the_order_found_by_client_id(make_exchange, fake):
    ex = make_exchange(timeout_ms=400)
    fake.timeout_after_accept_next(CREATE)

    ack = buy_btc(ex)

    assert ack.existing is True
    assert ack.exchange_order_id == fake.orders()[0].order_id
    assert ack.state.status == "filled"
    assert len(fake.requests_to(CREATE)) == 1
    assert len(fake.orders()) == 1


def test_gateway_error_is_temporary_and_a_retry_with_the_same_id_places_once(ex, fake):
    fake.http_error_next(CREATE, 502)

    with pytest.raises(TemporaryExchangeError) as info:
        buy_btc(ex)

    assert info.value.retryable
    assert fake.orders() == []
    assert fake.requests_to("/v5/order/realtime", orderLinkId="t1-y-open")  # it looked before giving up
    assert buy_btc(ex).existing is False
    assert len(fake.orders()) == 1


def test_lost_answer_of_a_create_that_did_not_reach_the_exchange(make_exchange, fake):
    ex = make_exchange(timeout_ms=400)
    fake.disconnect_next(CREATE)

    with pytest.raises(TemporaryExchangeError):
        buy_btc(ex)

    assert fake.orders() == []


def test_rate_limited_create_is_raised_without_a_lookup(ex, fake):
    fake.rate_limit_next(CREATE)

    with pytest.raises(RateLimited):
        buy_btc(ex)

    assert [r.path for r in fake.requests] == [CREATE]


HTML_200 = "<html><body><h1>Maintenance</h1></body></html>"


def test_an_unreadable_answer_to_a_create_that_was_applied_is_looked_up(ex, fake):
    """A 2xx page that isn't the exchange's JSON proves nothing (ccxt read it as an order without an id): the order is
    looked up by its client id, and found."""
    fake.http_error_after_accept_next(CREATE, 200, body=HTML_200)

    ack = buy_btc(ex)

    assert ack.existing is True
    assert ack.exchange_order_id == fake.orders()[0].order_id
    assert ack.state.status == "filled"
    assert len(fake.orders()) == 1


def test_an_unreadable_answer_to_a_create_that_was_not_applied_stays_unknown(ex, fake):
    fake.http_error_next(CREATE, 200, body=HTML_200)

    with pytest.raises(OrderOutcomeUnknown, match="an answer that can't be read"):
        buy_btc(ex)

    assert fake.orders() == []
    assert fake.requests_to("/v5/order/realtime", orderLinkId="t1-y-open")  # it looked before giving up


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_create_answered_without_an_order_id_is_looked_up(ex, fake, applied):
    """retCode 0 with an empty result names no order: it proves nothing, the order is looked up by its client id."""
    body = '{"retCode":0,"retMsg":"OK","result":{},"retExtInfo":{},"time":1}'
    if applied:
        fake.http_error_after_accept_next(CREATE, 200, body=body)
        ack = buy_btc(ex)
        assert (ack.existing, ack.exchange_order_id) == (True, fake.orders()[0].order_id)
        assert ack.state.status == "filled"
    else:
        fake.http_error_next(CREATE, 200, body=body)
        with pytest.raises(OrderOutcomeUnknown, match="answered without an order id"):
            buy_btc(ex)
        assert fake.orders() == []
    assert fake.requests_to("/v5/order/realtime", orderLinkId="t1-y-open")


@pytest.mark.parametrize(
    ("paths", "read"),
    [
        (("/v5/position/list",), lambda ex: ex.positions()),
        (("/v5/order/realtime",), lambda ex: ex.open_orders()),
        (("/v5/account/wallet-balance",), lambda ex: ex.balance()),
        (("/v5/order/realtime", "/v5/order/history", "/v5/execution/list"),
         lambda ex: ex.order_by_client_id(BTC, "t1-y-open")),
    ],
    ids=["positions", "open-orders", "balance", "lookup"],
)  # fmt: skip
def test_an_unreadable_read_is_unknown_not_empty(ex, fake, paths, read):
    """A position, an open order or a filled order is never taken for absent on an answer that can't be read."""
    buy_btc(ex)
    for path in paths:
        fake.http_error_next(path, 200, body=HTML_200)

    with pytest.raises(OrderOutcomeUnknown, match="an answer that can't be read"):
        read(ex)


# ---------------------------------------------------------------------------------------------------- rejections


def test_second_leg_rejected_is_a_permanent_invalid_order(ex, fake):
    buy_btc(ex)
    fake.reject_next_order("ETHUSDT", 110094, "Order does not meet minimum order value")

    with pytest.raises(InvalidOrder) as info:
        ex.place_order(symbol=ETH, side="sell", qty=Decimal("0.5"), client_order_id="t1-x-open")

    assert not info.value.retryable
    assert "Order does not meet minimum order value" in str(info.value)
    assert ex.order_by_client_id(ETH, "t1-x-open") is None
    assert fake.positions().keys() == {"BTCUSDT"}


def test_an_opening_order_on_a_contract_being_delisted_is_refused(ex, fake):
    """A contract in delivery (being delisted) takes reduce-only orders only; Bybit refuses any other with 110023,
    which proves the order was not applied: a rejection, not an unknown outcome to look up and send again."""
    buy_btc(ex)
    fake.delist("BTCUSDT", status="Delivering")
    fake.clear_requests()

    with pytest.raises(InvalidOrder, match="110023") as info:
        buy_btc(ex, client_order_id="t2-y-open")

    assert not info.value.retryable
    assert [r.path for r in fake.requests] == [CREATE]  # nothing to look up
    ex.place_order(symbol=BTC, side="sell", qty=Decimal("0.01"), client_order_id="t1-y-close", reduce_only=True)
    assert fake.position("BTCUSDT").size == 0


def test_reduce_only_that_would_increase_is_invalid(ex, fake):
    buy_btc(ex)

    with pytest.raises(InvalidOrder, match="110017"):
        buy_btc(ex, client_order_id="t1-y-unwind", reduce_only=True)

    assert fake.requests_to(CREATE)[-1].params["reduceOnly"] is True
    assert fake.position("BTCUSDT").size == Decimal("0.01")


def test_reduce_only_close(ex, fake):
    buy_btc(ex)
    ex.place_order(symbol=BTC, side="sell", qty=Decimal("0.01"), client_order_id="t1-y-close", reduce_only=True)

    state = ex.order_by_client_id(BTC, "t1-y-close")

    assert (state.status, state.reduce_only, state.side) == ("filled", True, "sell")
    assert fake.position("BTCUSDT").size == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qty": Decimal("0.0015")}, r"qty 0.0015 of BTC/USDT:USDT is not a multiple of its step 0.001"),
        ({"qty": Decimal("0.0001")}, "amount of BTC/USDT:USDT must be greater than minimum amount precision"),
        ({"qty": Decimal(0)}, "positive"),
        ({"qty": 0.01}, "Decimal"),
        ({"order_type": "limit", "price": Decimal("49000.05")}, "price 49000.05 .* step 0.1"),
        ({"order_type": "limit"}, "needs a positive Decimal price"),
        ({"price": Decimal(50000)}, "market order takes no price"),
        ({"client_order_id": "x" * 37}, "1-36"),
        ({"client_order_id": "has space"}, "1-36"),
        ({"side": "Buy"}, "side"),
        ({"order_type": "stop"}, "order_type"),
    ],
    ids=["off-step", "below-step", "zero", "float", "price-off-tick", "limit-no-price", "market-price", "long-id",
         "bad-id", "side", "type"],
)  # fmt: skip
def test_bad_orders_are_refused_before_any_request(ex, fake, kwargs, message):
    order = {"symbol": BTC, "side": "buy", "qty": Decimal("0.01"), "client_order_id": "t1-y-open"} | kwargs

    with pytest.raises(InvalidOrder, match=message):
        ex.place_order(**order)

    assert fake.requests == []


def test_limit_order_rests_and_is_cancelled_idempotently(ex, fake):
    ack = buy_btc(ex, order_type="limit", price=Decimal("49000.5"))
    assert fake.requests_to(CREATE)[0].params["price"] == "49000.5"

    resting = ex.order_by_client_id(BTC, "t1-y-open")
    assert (resting.status, resting.is_open, resting.limit_price) == ("submitted", True, Decimal("49000.5"))

    cancelled = ex.cancel(BTC, "t1-y-open")
    again = ex.cancel(BTC, "t1-y-open")

    assert (cancelled.status, cancelled.is_open, cancelled.filled_qty) == ("cancelled", False, 0)
    assert cancelled.exchange_order_id == ack.exchange_order_id
    assert again == cancelled
    assert len(fake.requests_to("/v5/order/cancel")) == 2
    with pytest.raises(OrderNotFound):
        ex.cancel(BTC, "never-placed")


def test_partial_fill_rests_as_partially_filled(ex, fake):
    fake.partial_fill_next("BTCUSDT", "0.4")

    ack = buy_btc(ex)

    assert ack.existing is False
    state = ex.order_by_client_id(BTC, "t1-y-open")
    assert (state.status, state.is_open) == ("partially_filled", True)
    assert (state.filled_qty, state.remaining_qty, state.avg_price) == (Decimal("0.004"), Decimal("0.006"), 50000)

    after_cancel = ex.cancel(BTC, "t1-y-open")

    assert (after_cancel.status, after_cancel.is_open, after_cancel.filled_qty) == (
        "partially_filled", False, Decimal("0.004"))  # fmt: skip


def test_partial_fill_with_the_rest_dropped(ex, fake):
    fake.partial_fill_next("BTCUSDT", "0.4", then="cancel")
    buy_btc(ex)

    state = ex.order_by_client_id(BTC, "t1-y-open")

    assert (state.status, state.is_open, state.filled_qty) == ("partially_filled", False, Decimal("0.004"))


# ---------------------------------------------------------------------------------------------------- account set-up


def test_prepare_account_sets_one_way_mode_and_leverage_idempotently(ex, fake):
    setup = ex.prepare_account([BTC, ETH], leverage=Decimal(3))

    assert setup.position_mode == "one_way"
    assert setup.leverage_changed == (BTC, ETH)
    assert fake.position("BTCUSDT").leverage == fake.position("ETHUSDT").leverage == 3
    (switch,) = fake.requests_to("/v5/position/switch-mode")
    assert (switch.params["mode"], switch.params["coin"]) == (0, "USDT")
    leverage_requests = fake.requests_to("/v5/position/set-leverage")
    assert [(r.params["symbol"], r.params["buyLeverage"], r.params["sellLeverage"]) for r in leverage_requests] == [
        ("BTCUSDT", "3", "3"), ("ETHUSDT", "3", "3")]  # fmt: skip

    again = ex.prepare_account([BTC, ETH], leverage=3)

    assert (again.position_mode_changed, again.leverage_changed) == (False, ())
    assert len(fake.requests_to("/v5/position/set-leverage")) == 4


def test_prepare_account_surfaces_other_errors(ex, fake):
    with pytest.raises(InvalidOrder):
        ex.prepare_account([BTC], leverage=0)
    fake.fail_next("/v5/position/set-leverage", 10001, "leverage invalid")
    with pytest.raises(PermanentExchangeError, match="leverage invalid") as info:
        ex.prepare_account([BTC], leverage=5)
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("/v5/position/switch-mode", 110024, "You have an existing position, so position mode cannot be switched"),
        ("/v5/position/switch-mode", 110028, "Open orders exist, so you cannot change position mode"),
        ("/v5/position/set-leverage", 110013, "Due to risk limit, cannot set leverage"),
    ],
)
def test_prepare_account_refusals_are_refusals(ex, fake, path, code, message):
    """An account in hedge mode with positions or orders, or a leverage its risk limit forbids: the exchange refused
    the setting, which a retry won't change; said at once, not retried as an unknown outcome."""
    fake.fail_next(path, code, message, times=5)

    with pytest.raises(InvalidOrder, match=message) as info:
        RetryingExchange(ex, sleep=lambda s: None).prepare_account([BTC], leverage=5)

    assert not info.value.retryable
    assert len(fake.requests_to(path)) == 1


# ---------------------------------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_raised_messages(make_exchange, fake, registered):
    registered.register_secret(API_KEY)
    registered.register_secret(API_SECRET)
    ex = make_exchange(credentials=Credentials(API_KEY, API_SECRET))
    fake.fail_next(CREATE, 10003, f"API key {API_KEY} is invalid (sign {API_SECRET}x)")
    fake.http_error_next("/v5/position/list", 502, body=f"<html>bad gateway for {API_KEY}/{API_SECRET}</html>")

    with pytest.raises(AuthenticationFailed) as auth:
        buy_btc(ex)
    with pytest.raises(TemporaryExchangeError) as gateway:
        ex.positions()

    for exc in (auth.value, gateway.value):
        assert API_KEY not in str(exc) and API_SECRET not in str(exc)
        assert API_KEY not in repr(exc) and API_SECRET not in repr(exc)
        assert exc.__cause__ is None and exc.__suppress_context__
    assert f"API key {secrets.MASK} is invalid (sign {secrets.MASK}x)" in str(auth.value)


def test_account_exchange_registers_the_credentials(make_exchange, fake):
    # nothing registered beforehand: building the client must do it
    ex = make_exchange(credentials=Credentials(API_KEY, API_SECRET))
    fake.fail_next("/v5/order/realtime", 10003, f"invalid key {API_KEY}")

    with pytest.raises(AuthenticationFailed) as info:
        ex.order_by_client_id(BTC, "t1-y-open")

    assert API_KEY not in str(info.value)


@pytest.mark.parametrize("code", [10001, 10004])
def test_an_answer_that_echoes_the_signature_is_masked(make_exchange, fake, registered, code):
    """Bybit's answers to a bad signature quote the request's key, timestamp and (10001) signature: none of it
    reaches the error the bot keeps, logs and notifies, and the answer is still a refusal."""
    ex = make_exchange(credentials=Credentials(API_KEY, API_SECRET))
    fake.auth_error_next(CREATE, code)

    with pytest.raises(ExchangeError) as info:
        buy_btc(ex)

    message = str(info.value)
    assert API_KEY not in message and API_SECRET not in message
    assert not re.search(r"[0-9a-f]{64}", message)  # the signature, a hex HMAC-SHA256
    assert ("apiSignature[***]" in message) if code == 10001 else ("origin_string[***]" in message)
    assert isinstance(info.value, AuthenticationFailed if code == 10004 else InvalidOrder)
    assert fake.orders() == []


@pytest.mark.parametrize(("code", "message"), [
    (170136, "Order quantity exceeded lower limit."),
    (170137, "Order volume decimal too long"),
    (170135, "Order quantity exceeded upper limit."),
    (170140, "Order value exceeded lower limit."),
])
def test_an_order_refused_for_its_quantity_or_value_is_invalid_not_unknown(ex, fake, code, message):
    """Bybit's validation of an order's quantity (below the minimum, off the step, above the maximum) and value
    proves the order was not placed: a rejection the bot books at once, not an unknown outcome it looks up and sends
    again under the same id for minutes while the other leg of the trade may be closed already."""
    fake.reject_next_order("ETHUSDT", code, message)
    fake.clear_requests()

    with pytest.raises(InvalidOrder, match=str(code)) as info:
        ex.place_order(symbol=ETH, side="sell", qty=Decimal("0.5"), client_order_id="t3-x-close")

    assert not info.value.retryable
    assert [r.path for r in fake.requests] == [CREATE]
