"""The paper exchange: simulated fills, positions, balance and funding in the database, with BybitExchange's
semantics (a contract test at the end runs one scenario against both, the ccxt side on the fake Bybit server)."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from core import secrets
from core.clock import ManualClock
from exchanges.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from exchanges.types import AccountSetup, BalanceState, FillState, FundingState, OrderAck, PositionState
from execution.models import ExchangeAccount, PaperAccount, PaperFill, PaperFunding, PaperOrder, PaperPosition
from execution.paper.exchange import PaperExchange, paper_exchange_for
from execution.paper.funding import stored_funding_rate
from execution.selectors import Credentials
from execution.venues import account_exchange
from pairs.market import FillQuote
from pairs.models import FundingRate, Instrument, StrategyConfig
from pairs.quant.fills import SlippageModel
from tests.factories import ExchangeAccountFactory, InstrumentFactory
from tests.fakes.bybit import FakeBybit

T0 = datetime(2021, 3, 1, 7, 0, tzinfo=UTC)
FEE = Decimal("0.00055")
SLIP = Decimal("0.0002")
BTC = "BTCUSDT"
ETH = "ETHUSDT"
XRP = "XRPUSDT"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class SymbolMarket:
    """A MarketView answering from a dict of prices by symbol (the test changes it between calls)."""

    timeframe = "1h"

    def __init__(self, prices: dict[str, Decimal], clock: ManualClock):
        self.prices = prices
        self.clock = clock
        self._symbols: dict[int, str] = {}

    def closes(self, instrument_ids) -> dict[int, Decimal]:
        ids = set(instrument_ids)
        missing = ids - set(self._symbols)
        if missing:
            self._symbols.update(Instrument.objects.filter(pk__in=missing).values_list("pk", "symbol"))
        return {pk: self.prices[self._symbols[pk]] for pk in ids if self._symbols.get(pk) in self.prices}


@pytest.fixture
def instruments(db):
    return {
        BTC: InstrumentFactory(symbol=BTC, base="BTC", qty_step=Decimal("0.001"), min_qty=Decimal("0.002"),
                               max_qty=Decimal("100"), min_notional=Decimal("5"), funding_interval_minutes=480),
        ETH: InstrumentFactory(symbol=ETH, base="ETH", qty_step=Decimal("0.01"), min_qty=Decimal("0.01"),
                               min_notional=Decimal("5"), funding_interval_minutes=None),
        XRP: InstrumentFactory(symbol=XRP, base="XRP", qty_step=Decimal("1"), min_qty=Decimal("1"),
                               min_notional=Decimal("5"), funding_interval_minutes=240),
    }  # fmt: skip


@pytest.fixture
def account(db):
    return ExchangeAccountFactory(capital=Decimal("10000"), leverage=Decimal("10"))


@pytest.fixture
def prices() -> dict[str, Decimal]:
    return {BTC: Decimal("50000"), ETH: Decimal("3000"), XRP: Decimal("0.5")}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def make_paper(account, prices, clock, instruments):
    def build(acc: ExchangeAccount | None = None, *, fee_rate=FEE, slippage=SLIP, funding_rate_of=None):
        return PaperExchange(acc or account, market=SymbolMarket(prices, clock), fee_rate=fee_rate, slippage=slippage,
                             funding_rate_of=funding_rate_of)  # fmt: skip

    return build


@pytest.fixture
def ex(make_paper) -> PaperExchange:
    return make_paper()


@pytest.fixture
def plain(make_paper) -> PaperExchange:
    """No fee, no slippage: round numbers for position and funding arithmetic."""
    return make_paper(fee_rate=Decimal(0), slippage=Decimal(0))


def buy(ex, symbol=BTC, qty="0.01", client_order_id="t1-y-open", **kwargs) -> OrderAck:
    return ex.place_order(symbol=symbol, side="buy", qty=Decimal(qty), client_order_id=client_order_id, **kwargs)


def sell(ex, symbol=BTC, qty="0.01", client_order_id="t1-y-close", **kwargs) -> OrderAck:
    return ex.place_order(symbol=symbol, side="sell", qty=Decimal(qty), client_order_id=client_order_id, **kwargs)


def wallet(account) -> Decimal:
    return PaperAccount.objects.get(account=account).wallet_balance


def snapshot(account) -> tuple:
    """Everything the paper exchange keeps for ``account``: unchanged after a refused call."""
    paper = PaperAccount.objects.filter(account=account).values_list("wallet_balance", "funding_settled_until").first()
    return (
        paper,
        sorted(PaperPosition.objects.filter(account=account).values_list("symbol", "qty", "avg_price")),
        PaperOrder.objects.filter(account=account).count(),
        PaperFill.objects.filter(order__account=account).count(),
        PaperFunding.objects.filter(account=account).count(),
    )


# ---------------------------------------------------------------------------------------------------- fills


def test_market_buy_fills_at_once_with_slippage_and_fee(ex, account):
    ack = buy(ex)

    (order,) = PaperOrder.objects.filter(account=account)
    state = ex.order_by_client_id(BTC, "t1-y-open")
    # The acknowledgment carries the final state and the fill, as the reads answer them afterwards.
    assert ack == OrderAck(f"paper-order-{order.pk}", "t1-y-open", BTC, existing=False, state=state,
                           fills=tuple(ex.fills_of(BTC, "t1-y-open")))  # fmt: skip
    assert len(ack.fills) == 1 and ack.fills[0].qty == Decimal("0.01")
    assert (state.status, state.is_open, state.side, state.order_type, state.raw_status) == (
        "filled", False, "buy", "market", "Filled")  # fmt: skip
    assert state.exchange_order_id == ack.exchange_order_id
    assert (state.qty, state.filled_qty, state.remaining_qty) == (Decimal("0.01"), Decimal("0.01"), 0)
    assert state.avg_price == Decimal(50000) * (1 + SLIP) == Decimal("50010")
    assert state.fee == Decimal("0.01") * Decimal("50010") * FEE == Decimal("0.275055")
    assert (state.fee_currency, state.reduce_only, state.limit_price) == ("USDT", False, None)
    assert state.created_ms == state.updated_ms == ms(T0)
    assert wallet(account) == Decimal(10000) - Decimal("0.275055")


def test_market_sell_fills_below_the_price(ex, account):
    sell(ex, ETH, "0.5", "t1-x-open")

    state = ex.order_by_client_id(ETH, "t1-x-open")
    assert state.avg_price == Decimal(3000) * (1 - SLIP) == Decimal("2999.4")
    assert state.fee == Decimal("0.5") * Decimal("2999.4") * FEE == Decimal("0.824835")
    assert ex.positions() == [PositionState(ETH, Decimal("-0.5"), Decimal("2999.4"), Decimal(3000), Decimal("-0.3"),
                                            Decimal(10))]  # fmt: skip


def test_fills_listed(ex, account, clock):
    clock.set(T0 + timedelta(seconds=1, milliseconds=234))
    ack = buy(ex, qty="0.02")

    fills = ex.fills_of(BTC, "t1-y-open")

    fill = PaperFill.objects.get(order__account=account)
    assert fills == [
        FillState(exec_id=f"paper-{fill.pk}", exchange_order_id=ack.exchange_order_id, client_order_id="t1-y-open",
                  symbol=BTC, side="buy", qty=Decimal("0.02"), price=Decimal(50010),
                  fee=Decimal("0.02") * Decimal(50010) * FEE, fee_currency="USDT", is_maker=False,
                  time_ms=ms(T0) + 1234)
    ]  # fmt: skip
    assert fills[0].filled_at == clock.now()
    assert ex.fills_of(BTC, exchange_order_id=ack.exchange_order_id) == fills
    assert ex.fills_of(BTC, since_ms=ms(T0) + 1234, client_order_id="t1-y-open") == fills
    assert ex.fills_of(BTC, since_ms=ms(T0) + 1235, client_order_id="t1-y-open") == []
    assert ex.fills_of(BTC, "another-order") == []
    assert ex.fills_of(ETH, "t1-y-open") == []
    assert ex.fills_of(BTC, exchange_order_id="paper-order-999999") == []
    assert ex.fills_of(BTC, exchange_order_id="not-ours") == []
    with pytest.raises(ValueError, match="exactly one"):
        ex.fills_of(BTC)


def test_order_lookup_and_cancel(ex):
    buy(ex)

    assert ex.order_by_client_id(BTC, "never-placed") is None
    assert ex.order_by_client_id(ETH, "t1-y-open") is None  # on another symbol
    assert ex.cancel(BTC, "t1-y-open") == ex.order_by_client_id(BTC, "t1-y-open")  # already final
    with pytest.raises(OrderNotFound):
        ex.cancel(BTC, "never-placed")


def test_orders_of_another_account_are_invisible(make_paper, ex):
    buy(ex)
    other = make_paper(ExchangeAccountFactory())

    assert other.order_by_client_id(BTC, "t1-y-open") is None
    assert other.positions() == []
    assert buy(other).existing is False  # client ids are per account, as on two exchange accounts


def test_prepare_account_changes_nothing(ex, account):
    setup = ex.prepare_account([BTC, ETH], leverage=Decimal(3))

    assert setup == AccountSetup("one_way", False, Decimal(3), ())
    assert ex.prepare_account([BTC], leverage=3) == setup
    assert wallet(account) == Decimal(10000)  # the paper wallet exists from now on
    with pytest.raises(InvalidOrder):
        ex.prepare_account([BTC], leverage=0)


def test_only_paper_accounts(make_paper):
    for mode in ("demo", "real"):
        with pytest.raises(NotSupported, match="trades on the exchange"):
            make_paper(ExchangeAccountFactory(mode=mode))


def test_symbol_for_is_the_exchange_id(ex, instruments):
    assert ex.symbol_for(instruments[BTC]) == "BTCUSDT"


# ---------------------------------------------------------------------------------------------------- idempotency


def test_same_client_order_id_returns_the_existing_order(ex, account):
    first = buy(ex)
    state = ex.order_by_client_id(BTC, "t1-y-open")

    second = buy(ex)

    assert second == OrderAck(first.exchange_order_id, "t1-y-open", BTC, existing=True, state=state)
    assert PaperOrder.objects.filter(account=account).count() == 1
    assert PaperFill.objects.filter(order__account=account).count() == 1
    assert ex.positions()[0].qty == Decimal("0.01")
    assert wallet(account) == Decimal(10000) - state.fee


@pytest.mark.parametrize(
    "order",
    [{"side": "sell"}, {"reduce_only": True}, {"symbol": ETH, "qty": Decimal("1")}],
    ids=["other-side", "other-reduce-only", "other-symbol"],
)
def test_client_order_id_taken_by_a_different_order(ex, account, order):
    buy(ex)
    before = snapshot(account)

    with pytest.raises(DuplicateClientOrderId, match="taken by a different order") as info:
        ex.place_order(**({"symbol": BTC, "side": "buy", "qty": Decimal("0.01"), "client_order_id": "t1-y-open"}
                          | order))  # fmt: skip

    assert not info.value.retryable
    assert snapshot(account) == before


def test_a_taken_client_order_id_writes_nothing_even_with_funding_due(ex, account, clock):
    buy(ex)
    clock.set(T0.replace(hour=9))  # the 08:00 settlement is due on the open position
    before = snapshot(account)

    with pytest.raises(DuplicateClientOrderId):
        sell(ex, client_order_id="t1-y-open")

    assert snapshot(account) == before  # no settlement, no watermark move: a refused order writes nothing
    buy(ex)  # a retry of the same order settles what is due, as any read does
    assert PaperFunding.objects.filter(account=account).count() == 1


class _FeedBug(Exception):
    """A defect of a price feed (not an exchange error)."""


@pytest.mark.parametrize("call", ["place_order", "balance"])
def test_an_error_while_reading_leaves_the_callers_transaction_usable(make_paper, account, clock, call):
    """The paper exchange's blocks run without a savepoint: an error raised while they read (a feed's bug here) must
    come out after the block, so a caller that catches it (the bot isolates one trade's error) can still write in
    its transaction (a replay's bar), and nothing of the failed call is written."""
    ex = make_paper()
    buy(ex)  # the wallet and a position exist
    before = snapshot(account)

    class BrokenMarket(SymbolMarket):
        def closes(self, instrument_ids):
            raise _FeedBug(f"no price source for {sorted(instrument_ids)}")

    ex._market = BrokenMarket(prices, clock)
    clock.set(T0.replace(hour=9))  # the 08:00 settlement is due: the read asks for a price inside the block
    with transaction.atomic():
        with pytest.raises(_FeedBug):
            if call == "place_order":
                buy(ex, ETH, "1", "t2-y-open")
            else:
                ex.balance()
        assert snapshot(account) == before  # the caller's transaction still runs queries, and saw no write
        PaperOrder.objects.filter(account=account).update(fee=F("fee"))  # and can write


# ---------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("order", "error", "message"),
    [
        ({"qty": Decimal("0.0025")}, InvalidOrder, r"qty 0.0025 of BTCUSDT is not a multiple of its step 0.001"),
        ({"qty": Decimal("0.001")}, InvalidOrder, r"qty 0.001 of BTCUSDT is below its minimum 0.002"),
        ({"qty": Decimal("100.001")}, InvalidOrder, r"qty 100.001 of BTCUSDT is above its maximum 100"),
        ({"symbol": XRP, "qty": Decimal("9")}, InvalidOrder, r"order value 4.5 of XRPUSDT .* minimum notional 5"),
        ({"qty": Decimal(0)}, InvalidOrder, "positive"),
        ({"qty": Decimal("-0.01")}, InvalidOrder, "positive"),
        ({"qty": Decimal("NaN")}, InvalidOrder, "positive"),
        ({"qty": 0.01}, InvalidOrder, "Decimal"),
        ({"order_type": "limit", "price": Decimal(49000)}, NotSupported, "market orders only"),
        ({"price": Decimal(50000)}, InvalidOrder, "market order takes no price"),
        ({"client_order_id": "x" * 37}, InvalidOrder, "1-36"),
        ({"client_order_id": "has space"}, InvalidOrder, "1-36"),
        ({"client_order_id": ""}, InvalidOrder, "1-36"),
        ({"side": "Buy"}, InvalidOrder, "side"),
        ({"order_type": "stop"}, InvalidOrder, "order_type"),
        ({"symbol": "BTC/USDT:USDT"}, PermanentExchangeError, "no instrument"),
    ],
    ids=["off-step", "below-min-qty", "above-max-qty", "below-min-notional", "zero", "negative", "nan", "float",
         "limit", "market-price", "long-id", "bad-id", "empty-id", "side", "type", "unknown-symbol"],
)  # fmt: skip
def test_bad_orders_write_nothing(ex, account, order, error, message):
    with pytest.raises(error, match=message) as info:
        ex.place_order(**({"symbol": BTC, "side": "buy", "qty": Decimal("0.01"), "client_order_id": "t1"} | order))

    assert not info.value.retryable
    assert snapshot(account) == (None, [], 0, 0, 0)


def test_bad_order_after_trading_changes_nothing(ex, account):
    buy(ex)
    before = snapshot(account)

    with pytest.raises(InvalidOrder, match="minimum notional"):
        sell(ex, XRP, "9", "t2-x-open")

    assert snapshot(account) == before


def test_instrument_without_filters_checks_none(make_paper, prices):
    InstrumentFactory(symbol="CSVUSDT", base="CSV", qty_step=None, min_qty=None, min_notional=None, max_qty=None)
    prices["CSVUSDT"] = Decimal("0.1")
    ex = make_paper()

    buy(ex, "CSVUSDT", "0.000123")

    assert ex.positions(["CSVUSDT"])[0].qty == Decimal("0.000123")


def test_no_price_is_temporary_and_writes_nothing(ex, account, prices):
    del prices[BTC]

    with pytest.raises(TemporaryExchangeError, match="BTCUSDT") as info:
        buy(ex)

    assert info.value.retryable
    assert snapshot(account) == (None, [], 0, 0, 0)

    buy(ex, ETH, "0.1", "t2-y-open")
    before = snapshot(account)
    with pytest.raises(TemporaryExchangeError, match="BTCUSDT"):
        buy(ex)
    assert snapshot(account) == before


# ---------------------------------------------------------------------------------------------------- reduce-only


def test_reduce_only_without_a_position_is_refused(ex, account):
    with pytest.raises(InvalidOrder, match="no position"):
        sell(ex, reduce_only=True)

    assert snapshot(account) == (None, [], 0, 0, 0)


def test_reduce_only_that_would_increase_is_refused(ex, account):
    buy(ex)
    before = snapshot(account)

    with pytest.raises(InvalidOrder, match="would increase"):
        buy(ex, client_order_id="t1-y-unwind", reduce_only=True)

    assert snapshot(account) == before


def test_reduce_only_larger_than_the_position_is_cut_to_it(ex, account):
    buy(ex)

    sell(ex, qty="0.05", reduce_only=True)

    state = ex.order_by_client_id(BTC, "t1-y-close")
    assert (state.status, state.reduce_only, state.side) == ("filled", True, "sell")
    assert state.qty == state.filled_qty == Decimal("0.01")
    assert [f.qty for f in ex.fills_of(BTC, "t1-y-close")] == [Decimal("0.01")]
    assert ex.positions() == []
    assert ex.positions([BTC, ETH]) == []


def test_reduce_only_is_exempt_from_the_minimum_notional(ex):
    buy(ex, XRP, "20", "t1-open")  # 10 USDT

    sell(ex, XRP, "9", "t1-reduce", reduce_only=True)  # 4.5 USDT < 5: allowed to reduce

    assert ex.positions()[0].qty == Decimal(11)


# ---------------------------------------------------------------------------------------------------- funds


@pytest.fixture
def small(make_paper, db):
    """1000 USDT at leverage 1, price 50000, fee 0.00055, no slippage."""
    acc = ExchangeAccountFactory(capital=Decimal("1000"), leverage=Decimal("1"))
    return acc, make_paper(acc, slippage=Decimal(0))


def test_opening_needs_margin_and_fee_available(small):
    acc, ex = small
    with pytest.raises(InsufficientFunds, match=r"needs 1000\.55 .* available 1000"):
        buy(ex, qty="0.02")  # margin 1000 + fee 0.55
    assert snapshot(acc) == (None, [], 0, 0, 0)

    buy(ex, qty="0.019")  # margin 950 + fee 0.5225
    assert ex.balance().available == Decimal(1000) - Decimal("0.5225") - Decimal(950)
    before = snapshot(acc)

    with pytest.raises(InsufficientFunds) as info:
        buy(ex, qty="0.002", client_order_id="t2-y-open")
    assert not info.value.retryable
    assert snapshot(acc) == before

    sell(ex, qty="0.019", reduce_only=True)  # closing needs no margin
    assert ex.positions() == []


def test_leverage_lowers_the_margin(make_paper):
    acc = ExchangeAccountFactory(capital=Decimal("1000"), leverage=Decimal("5"))
    ex = make_paper(acc, slippage=Decimal(0))

    buy(ex, qty="0.09")  # 4500 notional, 900 margin

    assert ex.balance().available == Decimal(1000) - Decimal("2.475") - Decimal(900)


# ---------------------------------------------------------------------------------------------------- positions


def test_averaging_realised_pnl_and_flip(plain, account, prices):
    prices[ETH] = Decimal(100)
    buy(plain, ETH, "1", "o1")
    prices[ETH] = Decimal(110)
    buy(plain, ETH, "1", "o2")
    assert plain.positions() == [PositionState(ETH, Decimal(2), Decimal(105), Decimal(110), Decimal(10), Decimal(10))]

    prices[ETH] = Decimal(120)
    sell(plain, ETH, "0.5", "o3")  # realises 0.5 x (120 - 105)
    assert wallet(account) == Decimal("10007.5")
    (position,) = plain.positions()
    assert (position.qty, position.avg_price) == (Decimal("1.5"), Decimal(105))

    prices[ETH] = Decimal(90)
    sell(plain, ETH, "2.5", "o4")  # closes 1.5 at a loss of 15 each, opens 1 short at 90
    assert wallet(account) == Decimal("10007.5") - Decimal("22.5")
    assert plain.positions() == [PositionState(ETH, Decimal(-1), Decimal(90), Decimal(90), Decimal(0), Decimal(10))]

    prices[ETH] = Decimal(80)
    buy(plain, ETH, "1", "o5", reduce_only=True)  # the short gains 10
    assert wallet(account) == Decimal(9995)
    assert plain.positions() == []
    assert plain.balance() == BalanceState("USDT", Decimal(9995), Decimal(9995), Decimal(9995), Decimal(0))


def test_realised_pnl_net_of_fees_and_slippage(ex, account, prices):
    buy(ex, qty="0.1")  # at 50010, fee 2.750550
    prices[BTC] = Decimal(51000)
    sell(ex, qty="0.1", reduce_only=True)  # at 50989.8, fee 2.8044390

    pnl = Decimal("0.1") * (Decimal("50989.8") - Decimal("50010"))
    assert wallet(account) == Decimal(10000) + pnl - Decimal("2.75055") - Decimal("2.804439")


def test_positions_are_signed_sorted_and_filtered(plain, prices):
    buy(plain, ETH, "1", "o1")
    sell(plain, BTC, "0.1", "o2")
    prices[BTC] = Decimal(49000)
    prices[ETH] = Decimal(2900)

    positions = plain.positions()

    assert positions == [
        PositionState(BTC, Decimal("-0.1"), Decimal(50000), Decimal(49000), Decimal(100), Decimal(10)),
        PositionState(ETH, Decimal(1), Decimal(3000), Decimal(2900), Decimal(-100), Decimal(10)),
    ]
    assert [p.side for p in positions] == ["short", "long"]
    assert plain.positions([ETH]) == positions[1:]
    assert plain.positions(settle_coin="USDC") == []


def test_position_without_a_price(plain, prices):
    buy(plain, ETH, "1", "o1")
    del prices[ETH]

    assert plain.positions() == [PositionState(ETH, Decimal(1), Decimal(3000), None, Decimal(0), Decimal(10))]
    # its margin is counted at the entry price
    assert plain.balance() == BalanceState("USDT", Decimal(10000), Decimal(10000), Decimal(9700), Decimal(0))


# ---------------------------------------------------------------------------------------------------- balance


def test_balance(ex, account, prices):
    assert ex.balance() == BalanceState("USDT", Decimal(10000), Decimal(10000), Decimal(10000), Decimal(0))
    buy(ex, qty="0.1")  # 0.1 at 50010, fee 2.75055
    prices[BTC] = Decimal(51000)

    balance = ex.balance("USDT")

    upnl = Decimal("0.1") * (Decimal(51000) - Decimal(50010))
    assert balance.unrealised_pnl == upnl == Decimal(99)
    assert balance.wallet_balance == Decimal(10000) - Decimal("2.75055")
    assert balance.equity == balance.wallet_balance + upnl
    assert balance.available == balance.equity - Decimal("0.1") * Decimal(51000) / Decimal(10)
    assert ex.balance("USDC") == BalanceState("USDC", Decimal(0), Decimal(0), Decimal(0), Decimal(0))


def test_a_second_instance_sees_the_same_account(make_paper, ex, account):
    buy(ex)
    other = make_paper()

    assert other.balance() == ex.balance()
    other.place_order(symbol=BTC, side="buy", qty=Decimal("0.01"), client_order_id="t2-y-open")
    assert ex.positions()[0].qty == Decimal("0.02")
    assert wallet(account) == Decimal(10000) - 2 * Decimal("0.275055")


# ---------------------------------------------------------------------------------------------------- funding


def test_funding_long_pays_short_receives(plain, account, clock):
    buy(plain, BTC, "0.1", "o1")
    sell(plain, ETH, "1", "o2")
    clock.set(T0 + timedelta(hours=1))  # 08:00

    balance = plain.balance()

    # default rate 0.0001: the long pays 0.1 x 50000 x 0.0001, the short receives 1 x 3000 x 0.0001
    assert balance.wallet_balance == Decimal(10000) - Decimal("0.5") + Decimal("0.3")
    assert plain.funding_payments(since_ms=ms(T0), until_ms=ms(clock.now())) == [
        FundingState(BTC, ms(clock.now()), Decimal("0.0001"), Decimal("0.1"), Decimal(50000), Decimal("-0.5")),
        FundingState(ETH, ms(clock.now()), Decimal("0.0001"), Decimal(-1), Decimal(3000), Decimal("0.3")),
    ]


def test_funding_settles_once_per_time(plain, make_paper, account, clock):
    buy(plain, BTC, "0.1", "o1")
    clock.set(T0 + timedelta(hours=1, minutes=30))

    plain.balance()
    plain.balance()
    plain.positions()
    make_paper().funding_payments(since_ms=0, until_ms=ms(clock.now()))  # another process

    assert PaperFunding.objects.filter(account=account).count() == 1
    assert wallet(account) == Decimal("9999.5")


def test_no_funding_for_the_time_before_the_account(plain, account, clock):
    clock.set(T0.replace(hour=8))  # the paper account starts at a settlement time: that one is past
    buy(plain, BTC, "0.1", "o1")
    clock.set(T0.replace(hour=15, minute=59))

    assert plain.funding_payments(since_ms=0, until_ms=ms(clock.now())) == []
    assert wallet(account) == Decimal(10000)


def test_funding_settled_before_an_order_changes_the_position(plain, account, clock):
    buy(plain, BTC, "0.1", "o1")
    clock.set(T0 + timedelta(hours=1, minutes=30))
    sell(plain, BTC, "0.1", "o2", reduce_only=True)  # 08:00 was settled on the 0.1 long first
    clock.set(T0 + timedelta(days=1))

    (row,) = plain.funding_payments(since_ms=0, until_ms=ms(clock.now()))
    assert (row.time_ms, row.position_qty, row.amount) == (ms(T0.replace(hour=8)), Decimal("0.1"), Decimal("-0.5"))


def test_reads_within_an_hour_write_nothing_and_later_positions_pay_only_their_own_times(plain, account, clock):
    at = T0.replace  # T0 is 07:00; BTC settles 8-hourly (00, 08, 16), XRP 4-hourly (also 04, 12, 20)
    clock.set(at(hour=9))
    buy(plain, BTC, "0.1", "o1")
    clock.set(at(hour=9, minute=40))  # no whole hour passed: no instrument can have settled
    with CaptureQueriesContext(connection) as queries:
        plain.balance()
        plain.positions()
    assert not [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "INSERT"))]
    assert PaperAccount.objects.get(account=account).funding_settled_until == at(hour=9)  # the reads left it

    clock.set(at(hour=11, minute=30))
    plain.balance()  # 10:00 and 11:00 passed: no settlement of BTC, but the watermark passes them
    assert PaperAccount.objects.get(account=account).funding_settled_until == clock.now()

    # Opened after 12:00: XRP must not pay the 12:00 settlement, whatever the watermark was.
    clock.set(at(hour=12, minute=45))
    buy(plain, XRP, "100", "o2")
    clock.set(at(hour=16, minute=30))

    rows = plain.funding_payments(since_ms=0, until_ms=ms(clock.now()))

    assert [(r.symbol, r.settled_at.hour) for r in rows] == [(BTC, 16), (XRP, 16)]


def test_an_interval_change_applies_from_the_reads_after_it(make_paper, account, clock, instruments):
    """Bybit moves a capped symbol from 8-hourly to hourly funding: the hours before the change, which the bot's reads
    (every few minutes live) passed, are not settled again with the new interval."""
    clock.set(T0.replace(hour=8, minute=1))
    buy(make_paper(fee_rate=Decimal(0), slippage=Decimal(0)), BTC, "0.1", "o1")
    for hour in range(9, 14):
        clock.set(T0.replace(hour=hour, minute=5))
        make_paper(fee_rate=Decimal(0), slippage=Decimal(0)).positions()  # a live bot builds its exchange each tick
    instruments[BTC].funding_interval_minutes = 60
    instruments[BTC].save(update_fields=["funding_interval_minutes"])
    clock.set(T0.replace(hour=14, minute=5))

    rows = make_paper(fee_rate=Decimal(0), slippage=Decimal(0)).funding_payments(since_ms=0, until_ms=ms(clock.now()))

    assert [(r.symbol, r.settled_at.hour) for r in rows] == [(BTC, 14)]


def test_funding_uses_stored_rates_and_the_current_price(plain, account, clock, prices, instruments):
    FundingRate.objects.create(instrument=instruments[BTC], funding_time=T0.replace(hour=16), rate=Decimal("0.0003"))
    buy(plain, BTC, "0.1", "o1")
    clock.set(T0.replace(hour=17))
    prices[BTC] = Decimal(52000)  # the price known when funding is settled (lazily) is the one used

    rows = plain.funding_payments(since_ms=0, until_ms=ms(clock.now()))

    assert [(r.settled_at.hour, r.rate, r.mark_price, r.amount) for r in rows] == [
        (8, Decimal("0.0001"), Decimal(52000), Decimal("-0.52")),
        (16, Decimal("0.0003"), Decimal(52000), Decimal("-1.56")),
    ]
    assert wallet(account) == Decimal(10000) - Decimal("0.52") - Decimal("1.56")
    assert plain.funding_payments(since_ms=ms(T0.replace(hour=8)) + 1, until_ms=ms(clock.now())) == rows[1:]
    assert plain.funding_payments(since_ms=0, until_ms=ms(clock.now()), settle_coin="USDC") == []


def test_funding_intervals_of_the_instruments(plain, clock, prices):
    buy(plain, XRP, "100", "o1")  # 4-hourly
    buy(plain, ETH, "1", "o2")  # no interval stored: 8-hourly
    clock.set(T0 + timedelta(days=1))  # 07:00 the next day

    rows = plain.funding_payments(since_ms=0, until_ms=ms(clock.now()))

    assert [(r.symbol, r.settled_at.hour) for r in rows if r.symbol == XRP] == [
        (XRP, h) for h in (8, 12, 16, 20, 0, 4)]  # fmt: skip
    assert [r.settled_at.hour for r in rows if r.symbol == ETH] == [8, 16, 0]


def test_funding_with_a_rate_function_and_no_price(make_paper, account, clock, prices):
    ex = make_paper(fee_rate=Decimal(0), slippage=Decimal(0), funding_rate_of=lambda symbol, time: Decimal("-0.001"))
    buy(ex, ETH, "2", "o1")
    del prices[ETH]
    clock.set(T0.replace(hour=8))

    (row,) = ex.funding_payments(since_ms=0, until_ms=ms(clock.now()))

    # a negative rate: longs receive; without a price the entry price is the mark
    assert (row.rate, row.mark_price, row.amount) == (Decimal("-0.001"), Decimal(3000), Decimal(6))


def test_stored_funding_rate(instruments):
    time = T0.replace(hour=8)
    FundingRate.objects.create(instrument=instruments[BTC], funding_time=time, rate=Decimal("0.00025"))
    config = StrategyConfig.current()
    config.default_funding_rate = 0.0002
    config.save()

    assert stored_funding_rate(BTC, time, exchange="bybit") == Decimal("0.00025")
    assert stored_funding_rate(BTC, time, exchange="binance") == Decimal("0.0002")
    assert stored_funding_rate(ETH, time, exchange="bybit") == Decimal("0.0002")
    assert stored_funding_rate(ETH, time, exchange="bybit", default=Decimal("0.0005")) == Decimal("0.0005")


def test_paper_exchange_for_takes_the_costs_of_the_configuration(account, prices, clock, instruments):
    config = StrategyConfig.current()
    config.taker_fee, config.slippage, config.default_funding_rate = 0.0006, 0.0001, 0.0002
    config.save()

    ex = paper_exchange_for(account, market=SymbolMarket(prices, clock), config=config)
    buy(ex, ETH, "1", "o1")
    clock.set(T0.replace(hour=8))

    assert (ex.fee_rate, ex.slippage) == (Decimal("0.0006"), Decimal("0.0001"))
    state = ex.order_by_client_id(ETH, "o1")
    assert (state.avg_price, state.fee) == (Decimal("3000.3"), Decimal("3000.3") * Decimal("0.0006"))
    (row,) = ex.funding_payments(since_ms=0, until_ms=ms(clock.now()))
    assert row.rate == Decimal("0.0002")


# ---------------------------------------------------------------------------------------------------- concurrency


@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="row locks need a server database")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_processes_do_not_interleave(prices, clock, instruments):
    acc = ExchangeAccountFactory(capital=Decimal("10000"), leverage=Decimal("10"))
    errors: list[BaseException] = []

    def trade(prefix: str) -> None:
        try:
            ex = PaperExchange(acc, market=SymbolMarket(prices, clock), fee_rate=FEE, slippage=Decimal(0))
            for n in range(8):
                buy(ex, ETH, "0.1", f"{prefix}-{n}")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=trade, args=(p,)) for p in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert PaperPosition.objects.get(account=acc, symbol=ETH).qty == Decimal("2.4")
    assert wallet(acc) == Decimal(10000) - 24 * Decimal("0.1") * Decimal(3000) * FEE


@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="row locks need a server database")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_account_row_is_locked_before_its_wallet(prices, clock, instruments):
    """One statement locks the ExchangeAccount row and the PaperAccount row: the account's first. A paper call that
    waits for the account row (another transaction holds it, e.g. a bot planning a trade) must not hold the wallet
    row meanwhile, or a third transaction could lock the wallet's row and then wait for the account's: a deadlock."""
    acc = ExchangeAccountFactory(capital=Decimal("10000"), leverage=Decimal("10"))
    PaperExchange(acc, market=SymbolMarket(prices, clock), fee_rate=FEE, slippage=Decimal(0)).balance()  # the wallet
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    answers: list[BalanceState] = []

    def hold_the_account() -> None:
        try:
            with transaction.atomic():
                ExchangeAccount.objects.select_for_update().filter(pk=acc.pk).values_list("pk").first()
                holding.set()
                release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            connection.close()

    def read_the_balance() -> None:
        try:
            ex = PaperExchange(acc, market=SymbolMarket(prices, clock), fee_rate=FEE, slippage=Decimal(0))
            answers.append(ex.balance())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_account)
    holder.start()
    assert holding.wait(30)
    reader = threading.Thread(target=read_the_balance)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not _transactions_waiting_for_a_lock():
            assert time.monotonic() < deadline, f"the balance read never waited for the account row: {errors} {answers}"
            time.sleep(0.25)  # InnoDB refreshes this table only when it was not read for 0.1 s
        # The reader waits for the account row; the wallet's row is free (NOWAIT raises if it is locked).
        with transaction.atomic():
            assert len(PaperAccount.objects.select_for_update(nowait=True).filter(account=acc).values_list("pk")) == 1
    finally:
        release.set()
        holder.join(30)
        reader.join(30)
    assert errors == []
    assert [a.wallet_balance for a in answers] == [Decimal(10000)]


def _transactions_waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'")
        return cursor.fetchone()[0]


# ---------------------------------------------------------------------------------------------------- contract


def _outcome(call) -> str:
    try:
        call()
    except ExchangeError as exc:
        return type(exc).__name__
    return "ok"


def _order_view(state) -> tuple:
    return (state.status, state.is_open, state.side, state.order_type, state.qty, state.filled_qty,
            state.remaining_qty, state.avg_price, state.fee, state.fee_currency, state.reduce_only,
            state.limit_price)  # fmt: skip


def contract_scenario(ex, symbol: str, set_price) -> dict:
    """Open a long of 1 unit, read it back, close it reduce-only: what a bot observes, keyed by step."""
    seen: dict = {}
    ack = ex.place_order(symbol=symbol, side="buy", qty=Decimal(1), client_order_id="c1-y-open")
    seen["ack"] = (ack.client_order_id, ack.symbol == symbol, ack.existing, bool(ack.exchange_order_id))
    opened = ex.order_by_client_id(symbol, "c1-y-open")
    seen["opened"] = (*_order_view(opened), opened.exchange_order_id == ack.exchange_order_id)
    fills = ex.fills_of(symbol, "c1-y-open")
    # An exchange may answer the state and the fills with the create (the paper exchange does, Bybit doesn't): if it
    # does, they are what the reads answer.
    seen["ack state and fills, if any, as read"] = (ack.state in (None, opened), ack.fills in (None, tuple(fills)))
    seen["open fills"] = [
        (f.side, f.qty, f.price, f.fee, f.fee_currency, f.is_maker, f.client_order_id,
         f.exchange_order_id == ack.exchange_order_id, f.symbol == symbol)
        for f in fills
    ]  # fmt: skip
    seen["fills by exchange id"] = ex.fills_of(symbol, exchange_order_id=ack.exchange_order_id) == fills
    again = ex.place_order(symbol=symbol, side="buy", qty=Decimal(1), client_order_id="c1-y-open")
    seen["retried"] = (again.existing, again.exchange_order_id == ack.exchange_order_id, _order_view(again.state))
    seen["taken id"] = _outcome(
        lambda: ex.place_order(symbol=symbol, side="sell", qty=Decimal(1), client_order_id="c1-y-open")
    )
    balance = ex.balance()
    seen["balance open"] = (balance.equity, balance.wallet_balance, balance.available, balance.unrealised_pnl)
    set_price(Decimal(110))
    seen["positions"] = [(p.side, p.qty, p.avg_price, p.mark_price, p.unrealised_pnl, p.leverage, p.symbol == symbol)
                         for p in ex.positions()]  # fmt: skip
    balance = ex.balance()
    seen["balance moved"] = (balance.equity, balance.wallet_balance, balance.unrealised_pnl)
    seen["increasing reduce-only"] = _outcome(
        lambda: ex.place_order(symbol=symbol, side="buy", qty=Decimal(1), client_order_id="c1-y-more", reduce_only=True)
    )
    ex.place_order(symbol=symbol, side="sell", qty=Decimal(2), client_order_id="c1-y-close", reduce_only=True)
    closed = ex.order_by_client_id(symbol, "c1-y-close")
    seen["closed"] = _order_view(closed)
    seen["close fills"] = [(f.side, f.qty, f.price, f.fee) for f in ex.fills_of(symbol, "c1-y-close")]
    seen["flat"] = (ex.positions(), ex.positions([symbol]))
    seen["balance flat"] = ex.balance()
    seen["reduce-only when flat"] = _outcome(
        lambda: ex.place_order(
            symbol=symbol, side="sell", qty=Decimal(1), client_order_id="c1-y-again", reduce_only=True
        )
    )
    seen["cancel filled"] = _order_view(ex.cancel(symbol, "c1-y-close"))
    seen["cancel unknown"] = _outcome(lambda: ex.cancel(symbol, "never-placed"))
    seen["unknown order"] = ex.order_by_client_id(symbol, "never-placed")
    return seen


def test_contract_paper_and_ccxt_answer_alike(db, monkeypatch, clock):
    monkeypatch.setattr(secrets, "_registered_secrets", set())
    with FakeBybit() as fake:
        fake.add_instrument("SOLUSDT", base="SOL", tick_size="0.01", qty_step="0.1", min_qty="0.1", price="100")
        real = ExchangeAccount(name="contract-real", exchange="bybit", mode="real", capital=Decimal(10000),
                               per_trade_budget=Decimal(100), base_url_override=fake.base_url)  # fmt: skip
        ccxt_exchange = account_exchange(real, Credentials("k", "s"), timeout_ms=3000, enable_rate_limit=False)
        ccxt_exchange.linear_instruments()
        on_ccxt = contract_scenario(ccxt_exchange, "SOL/USDT:USDT", lambda p: fake.set_price("SOLUSDT", p))
    assert fake.errors == []

    InstrumentFactory(symbol="SOLUSDT", base="SOL", tick_size=Decimal("0.01"), qty_step=Decimal("0.1"),
                      min_qty=Decimal("0.1"), min_notional=Decimal(5))  # fmt: skip
    sol_prices = {"SOLUSDT": Decimal(100)}
    account = ExchangeAccountFactory(capital=Decimal(10000), leverage=Decimal(10))  # the fake's default leverage
    paper = PaperExchange(account, market=SymbolMarket(sol_prices, clock), fee_rate=FEE, slippage=Decimal(0))
    on_paper = contract_scenario(paper, "SOLUSDT", lambda p: sol_prices.__setitem__("SOLUSDT", p))

    assert on_paper == on_ccxt
    assert repr(on_paper) == repr(on_ccxt)  # the numbers read the same too ("0.055", not "0.055000000000")
    # and the answers are the expected ones, not merely equal
    assert on_paper["opened"][:8] == ("filled", False, "buy", "market", 1, 1, 0, 100)
    assert on_paper["positions"] == [("long", 1, 100, 110, 10, 10, True)]
    assert on_paper["closed"][:6] == ("filled", False, "sell", "market", 1, 1)
    assert on_paper["flat"] == ([], [])
    assert on_paper["balance flat"].wallet_balance == Decimal(10000) - Decimal("0.055") + 10 - Decimal("0.0605")
    assert (on_paper["taken id"], on_paper["increasing reduce-only"], on_paper["reduce-only when flat"]) == (
        "DuplicateClientOrderId", "ReduceOnlyRejected", "ReduceOnlyRejected")  # fmt: skip
    assert (on_paper["cancel unknown"], on_paper["unknown order"]) == ("OrderNotFound", None)


class QuotingMarket(SymbolMarket):
    """A SymbolMarket that also quotes fills as the execution model does: the next open of each symbol, stamped at
    ``filled_at``, and a reference bar (open, high, low, turnover)."""

    def __init__(self, prices, clock, opens, reference, filled_at):
        super().__init__(prices, clock)
        self.opens, self.reference, self.filled_at, self.delays = opens, reference, filled_at, []

    def fill_quotes(self, instrument_ids, *, delay_bars=0):
        self.delays.append(delay_bars)
        self.closes(instrument_ids)  # learns the symbols
        return {pk: FillQuote(self.opens[self._symbols[pk]], self.filled_at, *self.reference)
                for pk in instrument_ids if self._symbols.get(pk) in self.opens}


def test_fills_at_the_quoted_open_with_fixed_plus_range_slippage(account, prices, clock, instruments):
    filled_at = T0 + timedelta(hours=1)
    market = QuotingMarket(prices, clock, {BTC: Decimal("50100")}, (50000.0, 50500.0, 49500.0, 1e6), filled_at)
    ex = PaperExchange(account, market=market, fee_rate=FEE, slippage=SLIP, execution_delay_bars=1,
                       slippage_model=SlippageModel(fixed=float(SLIP), model="range", factor=0.05))
    ack = buy(ex)
    # fixed 0.0002 + 0.05 x (50500 - 49500) / 50000 = 0.0002 + 0.001 = 0.0012 above the next open, not the close
    slip = SLIP + Decimal(repr(0.05 * 1000.0 / 50000.0))
    assert ack.fills[0].price == Decimal("50100") * (1 + slip)
    assert ack.fills[0].fee == Decimal("0.01") * Decimal("50100") * (1 + slip) * FEE
    assert ack.fills[0].time_ms == ms(filled_at)  # at the fill bar's open, the order at the clock
    assert ack.state.created_ms == ms(T0)
    assert market.delays == [1]
    sold = sell(ex)
    assert sold.fills[0].price == Decimal("50100") * (1 - slip)


def test_a_market_without_an_open_for_the_symbol_has_no_fill_price(account, prices, clock, instruments):
    market = QuotingMarket(prices, clock, {}, (math.nan,) * 4, None)
    ex = PaperExchange(account, market=market, fee_rate=FEE, slippage=SLIP)
    with pytest.raises(TemporaryExchangeError, match="no price for BTCUSDT"):
        buy(ex)
