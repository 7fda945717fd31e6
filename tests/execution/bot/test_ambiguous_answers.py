"""Answers that don't prove what the exchange did, against the real ccxt client and the fake Bybit v5 server: the
order stays unknown and is looked up by its client id, its executions decide, and no leg is left behind.

Each case ends with the account consistent (``assert_consistent``: the exchange's positions equal what the open
trades hold, every order of the bot known to the database with the exchange's filled quantity).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from core.clock import ManualClock
from exchanges.bybit import BybitExchange
from exchanges.errors import InsufficientFunds
from exchanges.types import FILLED, FROM_EXECUTIONS
from execution.models import Order, PairTrade, Signal
from monitoring.guard.cycle import guard_run
from notifications.models import Notification
from pairs.market import StoredMarket
from risk.models import GuardEvent
from tests.execution.bot.fault_world import CREATE, assert_consistent, exchange_of, lag_order_lookups, tick
from tests.factories import HaltFactory, RiskLimitFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _retry_refused_after_lost_answer(monkeypatch, fake, symbol: str, code: int, message: str) -> None:
    """The next create on ``symbol`` is accepted and its answer lost; the look-up right after fails (10016), and the
    retry under the same client id is refused with ``code`` (the first attempt took the margin, or flattened the
    position a reduce-only retry now finds gone)."""
    original = BybitExchange._order_after_failed_create

    def then_refuse(self, *args):
        fake.fail_next("/v5/order/realtime", 10016, "Internal System Error.")
        fake.reject_next_order(symbol, code, message)
        monkeypatch.setattr(BybitExchange, "_order_after_failed_create", original)
        return original(self, *args)

    monkeypatch.setattr(BybitExchange, "_order_after_failed_create", then_refuse)
    fake.timeout_after_accept_next(CREATE, symbol=symbol)


def test_a_retry_refused_after_a_lost_answer_is_unknown_not_rejected(world, fake, monkeypatch):
    _retry_refused_after_lost_answer(monkeypatch, fake, "YYYUSDT", 110007, "ab not enough for new order")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    y = Order.objects.get(trade=world.trade(), leg="y", action=Order.Action.OPEN)
    assert y.status != Order.Status.REJECTED and fake.position("YYYUSDT").size == 5
    for minutes in (1, 2):
        tick(world, now=world.now + timedelta(minutes=minutes))
    y.refresh_from_db()
    assert y.status == Order.Status.FILLED and y.filled_qty == 5
    assert world.trade().state == PairTrade.State.OPEN
    assert_consistent(world, fake)


def test_a_close_refused_on_retry_keeps_its_fills_and_the_pnl(world, fake, monkeypatch):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    _retry_refused_after_lost_answer(monkeypatch, fake, "YYYUSDT", 110017,
                                     "current position is zero, cannot fix reduce-only order qty")
    fake.set_price("YYYUSDT", "90")  # a losing trade: its loss must count against the limits
    world.next_bar(y="90", action=Signal.Action.EXIT)
    for minutes in range(4):
        tick(world, now=world.now + timedelta(minutes=minutes))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason != PairTrade.ExitReason.RECONCILED
    assert trade.realised_pnl is not None and trade.realised_pnl < 0
    assert_consistent(world, fake)


def test_an_unknown_order_is_not_given_up_under_a_halt_before_the_grace(world, fake, monkeypatch):
    """The order lists lag (three look-ups find nothing): a halt raised meanwhile stops a resend, but the order is
    looked up until the grace passes; it is found, and the trade completes its hedge rather than leaving y alone."""
    lag_order_lookups(monkeypatch, client_id_suffix="yo1", times=3)
    fake.timeout_after_accept_next(CREATE, symbol="YYYUSDT")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert Order.objects.get(trade=world.trade(), leg="y").status == Order.Status.UNKNOWN
    HaltFactory(account=world.account, reason="guard: daily loss")
    tick(world, now=world.now + timedelta(minutes=1))
    assert Order.objects.get(trade=world.trade(), leg="y").status == Order.Status.UNKNOWN
    tick(world, now=world.now + timedelta(minutes=2))
    y = Order.objects.get(trade=world.trade(), leg="y")
    assert y.status == Order.Status.FILLED and fake.position("YYYUSDT").size == 5
    assert world.trade().state in (PairTrade.State.OPEN, PairTrade.State.CLOSING, PairTrade.State.CLOSED)
    assert_consistent(world, fake)


class RefusalAfterTheFact:
    """The real adapter, but the y open's create is answered with a refusal after the exchange executed it (a
    mapping that took an answer for a refusal): the order is booked rejected though it filled."""

    def __init__(self, inner):
        self._inner, self.lied = inner, False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def place_order(self, **kwargs):
        ack = self._inner.place_order(**kwargs)
        if kwargs["client_order_id"].endswith("yo1") and not self.lied:
            self.lied = True
            raise InsufficientFunds("ab not enough for new order (110007)")
        return ack


def test_an_order_booked_rejected_that_filled_is_corrected_from_its_executions(world, fake):
    """Before a trade is called failed, its legs are compared with the exchange: the executions of its own order
    bring that order's row up to date, and the trade completes its hedge instead of leaving the y leg alone."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    lying = RefusalAfterTheFact(exchange_of(world))
    world.tick(exchange=lying)
    assert lying.lied and fake.position("YYYUSDT").size == 5
    trade = world.trade()
    y = Order.objects.get(trade=trade, leg="y", action=Order.Action.OPEN)
    assert (y.status, y.filled_qty) == (Order.Status.FILLED, 5)
    assert trade.state == PairTrade.State.OPEN and fake.position("XXXUSDT").size == Decimal("-8.5")
    assert "corrected" in Notification.objects.get(topic="executions_adopted").text
    assert_consistent(world, fake)


def test_an_order_seen_only_in_part_of_its_executions_stays_in_flight(world, fake, monkeypatch):
    """The order lists don't show the y open yet and its executions are listed in part (2 of 5): taken as final,
    the trade would top the leg up by 3 and hold 8. It stays in flight until the exchange shows all of it."""
    original = BybitExchange.order_by_client_id
    partial = {"left": 1}

    def partly_listed(self, symbol, client_order_id, **kwargs):
        state = original(self, symbol, client_order_id, **kwargs)
        if state is not None and client_order_id.endswith("yo1") and partial["left"] > 0:
            partial["left"] -= 1
            return replace(state, raw_status=FROM_EXECUTIONS, status=FILLED, is_open=False, qty=Decimal(2),
                           filled_qty=Decimal(2))
        return state

    monkeypatch.setattr(BybitExchange, "order_by_client_id", partly_listed)
    fake.timeout_after_accept_next(CREATE, symbol="YYYUSDT")  # the create's answer is lost: the order is looked up
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    y = Order.objects.get(trade=world.trade(), leg="y", action=Order.Action.OPEN)
    assert y.status == Order.Status.SUBMITTED and not Order.objects.filter(action=Order.Action.COMPLETE).exists()
    tick(world, now=world.now + timedelta(minutes=1))
    y.refresh_from_db()
    assert (y.status, y.filled_qty) == (Order.Status.FILLED, 5)
    assert world.trade().state == PairTrade.State.OPEN and fake.position("YYYUSDT").size == 5
    assert not Order.objects.filter(action=Order.Action.COMPLETE).exists()
    assert_consistent(world, fake)


def test_an_id_reported_taken_but_never_shown_is_given_up_with_a_critical_alert(world, fake):
    """The x open's create is answered "id is taken" every time and no look-up ever finds it: kept unknown (never
    given up early on the exchange's word), then, long after it was planned and with nothing executed under its
    id, taken as not executed; people are told, and the trade unwinds its y leg instead of holding it for good."""
    fake.reject_next_order("XXXUSDT", 110072, "OrderLinkedID is duplicate", times=100)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    x = Order.objects.get(trade=world.trade(), leg="x", action=Order.Action.OPEN)
    assert x.status == Order.Status.UNKNOWN and x.error.startswith("DuplicateClientOrderId")
    for minutes in (1, 6, 10, 29):
        tick(world, now=world.now + timedelta(minutes=minutes))
    x.refresh_from_db()
    assert x.status == Order.Status.UNKNOWN  # the exchange's word holds it within UNKNOWN_GIVE_UP
    fake.clear_faults()
    tick(world, now=world.now + timedelta(minutes=31))
    x.refresh_from_db()
    assert x.status == Order.Status.CANCELLED and "still not found" in x.error
    assert Notification.objects.filter(topic="order_unresolved", severity="critical").count() == 1
    assert GuardEvent.objects.filter(kind="order_unresolved", severity="critical").exists()
    trade = world.trade()
    assert trade.state != PairTrade.State.OPENING
    tick(world, now=world.now + timedelta(minutes=32))
    assert_consistent(world, fake)


def test_a_leg_the_exchange_contradicts_does_not_stop_the_other_leg_completing(world, fake):
    """A person bought 1 YYY by hand before the trade's executions window: y holds 6 against fills of 5, with no
    execution to explain it. The x leg, refused once, still completes its hedge from its own (agreeing) fills."""
    def by_hand(step):
        if step == "planned:trade":
            real_clock = fake._clock
            fake._clock = lambda: int(time.time() * 1000) - 2 * 60 * 1000  # before EXECUTIONS_LOOKBACK
            fake.open_position_by_hand("YYYUSDT", "buy", 1)
            fake._clock = real_clock

    fake.reject_next_order("XXXUSDT", 110007, "ab not enough for new order")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick(exchange=exchange_of(world), checkpoint=by_hand)
    for minutes in (1, 2):
        tick(world, now=world.now + timedelta(minutes=minutes))
    assert fake.position("XXXUSDT").size == Decimal("-8.5") and fake.position("YYYUSDT").size == 6
    assert Order.objects.filter(trade=world.trade(), leg="x", action=Order.Action.COMPLETE).exists()
    assert not Order.objects.filter(trade=world.trade(), leg="y", action=Order.Action.COMPLETE).exists()


def test_a_close_whose_answer_is_lost_does_not_hold_the_other_legs_close_back(world, fake):
    """y's reduce-only close executes but its answer is lost, and from then on the open-orders list can't be read
    (10016): x's close still goes out in the same tick, so the flat y leg never leaves x held alone; y's order is
    proved by the order history and the trade closes on the executions."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    fake.error_after_accept_next(CREATE, symbol="YYYUSDT")

    def outage(step):
        if step == "before_send:yc1":
            fake.fail_next("/v5/order/realtime", 10016, "Internal System Error.", times=1000)

    world.next_bar(action=Signal.Action.EXIT)
    tick(world, checkpoint=outage)
    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    x_close = Order.objects.get(leg="x", action=Order.Action.CLOSE)
    assert x_close.status == Order.Status.FILLED
    for minutes in (1, 2):
        tick(world, now=world.now + timedelta(minutes=minutes))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.realised_pnl is not None
    assert_consistent(world, fake)



def test_a_refused_entry_order_carries_when_it_was_planned_so_the_guard_counts_it(world, fake):
    """The error-burst check counts refused orders by when they were planned: an entry's orders carry that time
    like every later order, or the most common refusals (margin, at the opening) would never count."""
    fake.reject_next_order("YYYUSDT", 110007, "ab not enough for new order")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    y = Order.objects.get(leg="y", action=Order.Action.OPEN)
    assert y.status == Order.Status.REJECTED and y.planned_at == world.now
    RiskLimitFactory(account=world.account, error_burst_count=1, error_burst_minutes=10)
    market = StoredMarket(timeframe="1h", clock=ManualClock(world.now))
    report = guard_run(now=world.now, market=market, accounts=[world.account], live=False)
    assert "error_burst" in [b.check for b in report.breaches]


@pytest.mark.parametrize("halted", [False, True], ids=["no halt", "pair halted"])
def test_a_leg_closed_outside_the_bot_unwinds_the_other(world, fake, halted):
    """A liquidation (no client id) closes the y leg of an open trade: reconciliation adopts its execution and,
    the pair being no longer a hedge, closes x at once, even under a halt that freezes the pair (holding one leg
    alone is the risk a halt is there to stop)."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    if halted:
        HaltFactory(account=world.account, pair=world.pair, reason="one-legged trade", mode="halt")
    fake.close_position_by_hand("YYYUSDT", order_link_id="")
    tick(world, now=world.now + timedelta(minutes=6))  # the next reconciliation
    trade = world.trade()
    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    assert (trade.state, trade.exit_reason) == (PairTrade.State.UNWOUND, PairTrade.ExitReason.UNWOUND)
    assert trade.realised_pnl is not None
    assert GuardEvent.objects.filter(kind="leg_closed_outside").count() == 1
    assert Notification.objects.filter(topic="leg_closed_outside").count() == 1
    assert_consistent(world, fake)


def test_an_opening_leg_filled_beyond_its_target_is_unwound_not_left_opening(world, fake):
    """While the trade opens (x refused once), a person buys 1 YYY by hand: reconciliation of the legs adopts it,
    y holds more than planned and no completion can restore the hedge: both legs are unwound, so the trade never
    stays "opening", where no signal, manual close or flatten reaches it."""
    fake.reject_next_order("XXXUSDT", 110007, "ab not enough for new order")

    def by_hand(step):
        if step == "after_send:yo1":
            fake.open_position_by_hand("YYYUSDT", "Buy", "1")

    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world, checkpoint=by_hand)
    for minutes in (1, 2, 3):
        tick(world, now=world.now + timedelta(minutes=minutes))
    trade = world.trade()
    assert trade.state in PairTrade.FINAL_STATES, (trade.state, trade.error)
    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    assert_consistent(world, fake)


def test_an_order_no_lookup_finds_is_proved_by_its_executions(world, fake, monkeypatch):
    """y's opening times out after the exchange accepted it, and the look-up by client id never finds it (lists
    that disagree with the executions): the executions carrying its client id are the truth, so the trade is not
    called failed "nothing is held" while the exchange holds its y leg."""
    original = BybitExchange.order_by_client_id

    def blind(self, symbol, client_order_id, **kwargs):
        return None if client_order_id.endswith("yo1") else original(self, symbol, client_order_id, **kwargs)

    monkeypatch.setattr(BybitExchange, "order_by_client_id", blind)
    fake.timeout_after_accept_next(CREATE, symbol="YYYUSDT")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    for minutes in (1, 3, 6, 9, 32, 33, 34):
        tick(world, now=world.now + timedelta(minutes=minutes))
    trade = world.trade()
    assert not (trade.state == PairTrade.State.FAILED and fake.position("YYYUSDT").size != 0), trade.error
    y = Order.objects.get(leg="y", action=Order.Action.OPEN)
    assert y.filled_qty == 5
    assert trade.state == PairTrade.State.OPEN
    assert_consistent(world, fake)
