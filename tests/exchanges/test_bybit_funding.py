"""BybitExchange.funding_payments: the funding the account paid or received, through unmodified ccxt against the fake
Bybit v5 server (funding executions of /v5/execution/list, execType "Funding")."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest

from exchanges.bybit import BybitExchange
from exchanges.ccxt_client import build_ccxt_client
from exchanges.errors import AuthenticationFailed, PermanentExchangeError, RateLimited
from exchanges.types import FundingState
from tests.fakes.bybit import FakeBybit

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
EXECUTIONS = "/v5/execution/list"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a settlement time


@pytest.fixture
def fake():
    with FakeBybit() as server:
        server.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                              price="50012.3")  # fmt: skip
        server.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01",
                              price="3001.17")  # fmt: skip
        yield server
    assert server.errors == []


@pytest.fixture(params=["demo", "real"])
def ex(request, fake):
    client = build_ccxt_client("bybit", api_key="k", secret="s", demo=request.param == "demo",
                               base_url=fake.base_url, enable_rate_limit=False, timeout_ms=3000)  # fmt: skip
    exchange = BybitExchange(client)
    exchange.linear_instruments()  # markets loaded, as a bot does on start
    fake.clear_requests()
    return exchange


def open_positions(ex: BybitExchange) -> None:
    """Long 0.013 BTC, short 0.37 ETH."""
    ex.place_order(symbol=BTC, side="buy", qty=Decimal("0.013"), client_order_id="f-btc")
    ex.place_order(symbol=ETH, side="sell", qty=Decimal("0.37"), client_order_id="f-eth")


def test_long_and_short_across_two_settlements(ex, fake):
    open_positions(ex)
    paid = [
        fake.settle_funding("BTCUSDT", "0.000137", time_ms=T0),
        fake.settle_funding("ETHUSDT", "0.000137", time_ms=T0),
    ]
    fake.set_price("BTCUSDT", "50987.7", mark_price="50991.9")
    fake.set_price("ETHUSDT", "2987.41", mark_price="2987.53")
    t1 = T0 + 8 * HOUR_MS
    paid += [
        fake.settle_funding("BTCUSDT", "-0.000251", time_ms=t1),
        fake.settle_funding("ETHUSDT", "-0.000251", time_ms=t1),
    ]
    fake.clear_requests()

    payments = ex.funding_payments(since_ms=T0, until_ms=t1)

    assert payments == [
        FundingState(BTC, T0, Decimal("0.000137"), Decimal("0.013"), Decimal("50012.3"), Decimal("-0.0890719063")),
        FundingState(ETH, T0, Decimal("0.000137"), Decimal("-0.37"), Decimal("3001.17"), Decimal("0.1521293073")),
        FundingState(BTC, t1, Decimal("-0.000251"), Decimal("0.013"), Decimal("50991.9"), Decimal("0.1663865697")),
        FundingState(ETH, t1, Decimal("-0.000251"), Decimal("-0.37"), Decimal("2987.53"), Decimal("-0.2774519111")),
    ]  # fmt: skip
    # paid by the long on a positive rate and by the short on a negative one; received otherwise
    assert [p.amount for p in payments] == [-amount for amount in paid]
    for p in payments:
        assert p.amount == -(p.position_qty * p.mark_price * p.rate)  # exact: Decimals from the raw strings
        assert all(isinstance(v, Decimal) for v in (p.rate, p.position_qty, p.mark_price, p.amount))
    assert payments[0].settled_at.isoformat() == "2024-01-01T00:00:00+00:00"
    (request,) = fake.requests_to(EXECUTIONS)
    assert request.params["execType"] == "Funding"
    assert request.params["category"] == "linear"
    assert (int(request.params["startTime"]), int(request.params["endTime"])) == (T0, t1)
    assert int(request.params["limit"]) == 100


def test_amounts_are_exact_decimals_not_floats(ex, fake):
    ex.place_order(symbol=BTC, side="buy", qty=Decimal("0.001"), client_order_id="f-btc")
    fake.set_price("BTCUSDT", "50012.3", mark_price="0.1")
    fake.settle_funding("BTCUSDT", "0.0000001", time_ms=T0)  # paid 0.001 * 0.1 * 0.0000001

    (payment,) = ex.funding_payments(since_ms=T0, until_ms=T0)

    assert payment.amount == Decimal("-1E-11")
    assert str(payment.rate) == "1E-7"
    assert payment.amount != Decimal(-0.001 * 0.1 * 0.0000001)  # what a float would have made of it


def test_only_trades_and_other_windows_are_left_out(ex, fake):
    open_positions(ex)
    for ts in (T0 - 1, T0, T0 + 8 * HOUR_MS, T0 + 16 * HOUR_MS, T0 + 16 * HOUR_MS + 1):
        fake.settle_funding("BTCUSDT", "0.0001", time_ms=ts)

    payments = ex.funding_payments(since_ms=T0, until_ms=T0 + 16 * HOUR_MS)

    assert [p.time_ms for p in payments] == [T0, T0 + 8 * HOUR_MS, T0 + 16 * HOUR_MS]  # both bounds inclusive
    assert ex.funding_payments(since_ms=T0 + 1, until_ms=T0 + 8 * HOUR_MS - 1) == []
    assert ex.funding_payments(since_ms=T0 - DAY_MS, until_ms=T0 - 2) == []
    with pytest.raises(ValueError, match="after"):
        ex.funding_payments(since_ms=T0 + 1, until_ms=T0)


def test_a_window_longer_than_seven_days_is_asked_in_seven_day_pieces(ex, fake):
    open_positions(ex)
    times = [T0, T0 + 5 * DAY_MS, T0 + WEEK_MS, T0 + WEEK_MS + 1, T0 + 9 * DAY_MS, T0 + 16 * DAY_MS, T0 + 20 * DAY_MS]
    for ts in times:
        fake.settle_funding("ETHUSDT", "0.0001", time_ms=ts)
    fake.clear_requests()

    payments = ex.funding_payments(since_ms=T0, until_ms=T0 + 20 * DAY_MS)

    assert [p.time_ms for p in payments] == times  # each once, also on the seams of the pieces
    assert all(p.symbol == ETH and p.position_qty == Decimal("-0.37") and p.amount > 0 for p in payments)
    windows = [(int(r.params["startTime"]), int(r.params["endTime"])) for r in fake.requests_to(EXECUTIONS)]
    assert windows == [
        (T0, T0 + WEEK_MS),
        (T0 + WEEK_MS + 1, T0 + 2 * WEEK_MS + 1),
        (T0 + 2 * WEEK_MS + 2, T0 + 20 * DAY_MS),
    ]
    assert all(end - start <= WEEK_MS for start, end in windows)


def test_the_fake_refuses_more_than_seven_days_like_bybit(ex, fake):
    with pytest.raises(ccxt.BadRequest, match="7 days"):
        ex._client.fetch_funding_history(None, T0, None, {"until": T0 + WEEK_MS + 1})
    open_positions(ex)
    fake.settle_funding("BTCUSDT", "0.0001", time_ms=T0 + WEEK_MS)
    fake.settle_funding("BTCUSDT", "0.0001", time_ms=T0 + WEEK_MS + 1)
    # startTime alone: 7 days from it
    assert [r["timestamp"] for r in ex._client.fetch_funding_history(None, T0)] == [T0 + WEEK_MS]


def test_more_rows_than_one_page_are_read_page_by_page(ex, fake):
    open_positions(ex)
    times = [T0 + i * HOUR_MS for i in range(130)]
    for ts in times:
        fake.settle_funding("BTCUSDT", "0.0001", time_ms=ts)
        fake.settle_funding("ETHUSDT", "-0.0001", time_ms=ts)
    fake.clear_requests()

    payments = ex.funding_payments(since_ms=T0, until_ms=T0 + WEEK_MS)

    assert len(payments) == 260
    assert [(p.time_ms, p.symbol) for p in payments] == [(ts, symbol) for ts in times for symbol in (BTC, ETH)]
    assert all(p.amount < 0 for p in payments if p.symbol == BTC)  # long, positive rate: paid
    assert all(p.amount < 0 for p in payments if p.symbol == ETH)  # short, negative rate: paid
    requests = fake.requests_to(EXECUTIONS)
    assert len(requests) == 3  # 100 + 100 + 60
    assert "cursor" not in requests[0].params
    assert all(r.params.get("cursor") for r in requests[1:])


def test_only_the_asked_settle_coin(ex, fake):
    fake.add_instrument("BTCPERP", base="BTC", quote="USDC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                        price="50000")  # fmt: skip
    fake.set_balance("USDC", "10000")
    ex.linear_instruments()
    usdc_btc = "BTC/USDC:USDC"
    ex.place_order(symbol=usdc_btc, side="buy", qty=Decimal("0.01"), client_order_id="f-usdc")
    open_positions(ex)
    fake.settle_funding("BTCPERP", "0.0001", time_ms=T0)
    fake.settle_funding("BTCUSDT", "0.0001", time_ms=T0)

    assert [p.symbol for p in ex.funding_payments(since_ms=T0, until_ms=T0)] == [BTC]
    (usdc,) = ex.funding_payments(since_ms=T0, until_ms=T0, settle_coin="USDC")
    assert (usdc.symbol, usdc.position_qty, usdc.amount) == (usdc_btc, Decimal("0.01"), Decimal("-0.05"))


def test_zero_rate_takes_the_position_sign_from_the_side(ex, fake):
    open_positions(ex)
    fake.settle_funding("BTCUSDT", "0", time_ms=T0)
    fake.settle_funding("ETHUSDT", "0", time_ms=T0)

    payments = ex.funding_payments(since_ms=T0, until_ms=T0)

    assert [(p.symbol, p.position_qty, p.amount) for p in payments] == [
        (BTC, Decimal("0.013"), 0),
        (ETH, Decimal("-0.37"), 0),
    ]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (lambda fake: fake.rate_limit_next(EXECUTIONS), RateLimited),
        (lambda fake: fake.fail_next(EXECUTIONS, 10003, "API key is invalid"), AuthenticationFailed),
        (lambda fake: fake.fail_next(EXECUTIONS, 10001, "params error"), PermanentExchangeError),
    ],
)
def test_errors_are_ours(ex, fake, fault, error):
    fault(fake)
    with pytest.raises(error) as raised:
        ex.funding_payments(since_ms=T0, until_ms=T0 + DAY_MS)
    assert not isinstance(raised.value, ccxt.BaseError)
