"""Stuck and hand-made positions settle on the exchange's executions (issue #12): a close refused five times and then
closed by hand, an opening leg filled by hand, each against the fake Bybit v5 server and the real ccxt client."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from execution.models import BotHeartbeat, Fill, Order, PairTrade, Signal
from notifications.models import Notification
from risk.models import GuardEvent, Halt
from tests.execution.bot.fault_world import CREATE, assert_consistent, exchange_of, tick, tick_until_settled

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
MINUTE = timedelta(minutes=1)


def test_a_close_refused_five_times_then_closed_by_hand_settles_and_lifts_the_halt(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    fake.reject_next_order("YYYUSDT", 10001, "params error: something the bot can't fix", times=5)
    world.next_bar(action=Signal.Action.EXIT)
    for k in range(6):
        tick(world, now=world.now + k * MINUTE)
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSING and "close it by hand" in trade.error
    assert trade.orders.filter(leg="y", action=Order.Action.CLOSE).count() == 5
    assert Halt.objects.filter(account=world.account, cleared_at__isnull=True).exists()  # no new trades meanwhile
    # The phone's message says which account and which symbol to close by hand.
    text = Notification.objects.get(topic="trade_stuck").text
    head, refusal = text.split(" (the exchange's last refusal: ", 1)
    assert head == (f"[{world.account.name}] YYYUSDT/XXXUSDT trade {trade.pk} is stuck: the y leg (YYYUSDT) still "
                    "holds 5 after 5 close orders")
    # Why the exchange refused, so the person knows what they face (a rule to act on, or a contract it is settling).
    assert "params error: something the bot can't fix" in refusal
    assert refusal.endswith("); close it by hand on the exchange: the next tick settles the trade on the exchange's "
                            "executions")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.3)
    assert tick(world).opened == 0

    manual = fake.close_position_by_hand("YYYUSDT")  # the person does what the message asked
    report = tick(world, now=world.now + MINUTE)
    trade = world.trades()[0]
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == PairTrade.ExitReason.MANUAL, trade.error
    adopted = trade.orders.get(action=Order.Action.RECONCILE)
    fill = Fill.objects.get(order=adopted)
    assert (fill.exchange_fill_id, fill.qty, fill.price, fill.fee) == (
        manual.exec_id, manual.exec_qty, manual.exec_price, manual.exec_fee)
    assert trade.realised_pnl is not None
    assert not Halt.objects.filter(account=world.account, cleared_at__isnull=True).exists()
    assert GuardEvent.objects.filter(kind="executions_adopted").exists()
    assert Notification.objects.filter(topic="trade_closed").exists()
    assert report.mismatches == [] or report.reconciled is False
    # trading goes on: the entry signal that came while the trade was stuck (one bar late is still fresh) opens now
    assert report.opened == 1
    assert [t.state for t in world.trades()] == [PairTrade.State.CLOSED, PairTrade.State.OPEN]
    assert_consistent(world, fake)


def test_a_close_refused_because_the_leg_is_already_flat_is_settled_not_retried(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    fake.close_position_by_hand("YYYUSDT")  # gone before the bot closes: its reduce-only close is refused (110017)
    world.next_bar(action=Signal.Action.EXIT)
    BotHeartbeat.objects.filter(account=world.account).update(reconciled_at=world.now)  # no reconciliation first
    tick(world)
    tick(world, now=world.now + MINUTE)
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == PairTrade.ExitReason.MANUAL
    refused = trade.orders.filter(leg="y", action=Order.Action.CLOSE)
    assert refused.count() == 1 and refused.get().status == Order.Status.REJECTED
    assert "ReduceOnlyRejected" in refused.get().error
    assert_consistent(world, fake)


def test_an_opening_leg_filled_by_hand_is_adopted_and_the_trade_opens(world, fake):
    fake.fail_next(CREATE, 10016, "Internal System Error.", times=100, symbol="XXXUSDT")  # never applied
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPENING
    assert trade.orders.get(leg="x").status == Order.Status.UNKNOWN  # never taken for rejected
    fake.open_position_by_hand("XXXUSDT", "sell", "8.5")  # a person completes the hedge
    fake.clear_faults()
    tick(world, now=world.now + 6 * MINUTE)  # the x order's decision is stale now: it is not sent again
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN, trade.error
    assert trade.orders.get(leg="x", action=Order.Action.OPEN).status == Order.Status.CANCELLED
    assert trade.orders.get(leg="x", action=Order.Action.RECONCILE).filled_qty == Decimal("8.5")
    assert not [o for o in fake.orders(symbol="XXXUSDT") if o.order_link_id.startswith("sa")]
    assert_consistent(world, fake)


class _PositionsGlitch:
    """The account's exchange, but the next ``times`` positions answers are an empty list (HTTP 200, retCode 0)."""

    def __init__(self, inner, times: int = 1):
        self._inner, self._times = inner, times

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def positions(self, symbols=None, *, settle_coin="USDT"):
        if self._times > 0:
            self._times -= 1
            return []
        return self._inner.positions(symbols, settle_coin=settle_coin)


def test_one_empty_positions_answer_closes_no_trade(world, fake):
    """Both legs are held and nothing closed them: an empty positions list read once (the next read shows them) must
    not close the trade as "reconciled" and leave its legs with no trade to manage them."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    report = world.tick(exchange=_PositionsGlitch(exchange_of(world)), now=world.now + 6 * MINUTE)  # reconciles
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN and trade.exit_reason == ""
    assert report.mismatches == []
    assert GuardEvent.objects.filter(kind="positions_read_contradicted").count() == 2  # one per leg
    assert not Halt.objects.filter(account=world.account, cleared_at__isnull=True).exists()
    assert_consistent(world, fake)


def test_a_leg_settled_by_the_exchange_on_delisting_is_adopted_and_the_other_leg_unwound(world, fake):
    """Bybit settles a delisted contract's position with an execution of type "Delivery": it is adopted like any
    execution the bot did not place, and the trade, left with one leg, unwinds the other at once."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    fake.delist("YYYUSDT", status="Closed")
    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size != 0
    tick_until_settled(world, ticks=8)
    tick(world, now=world.now + 6 * MINUTE)
    trade = world.trade()
    assert (trade.state, trade.exit_reason) == (PairTrade.State.UNWOUND, PairTrade.ExitReason.UNWOUND), trade.error
    adopted = trade.orders.get(leg="y", action=Order.Action.RECONCILE)
    assert adopted.filled_qty == Decimal(5) and adopted.fee == 0
    assert fake.position("XXXUSDT").size == 0
    assert trade.realised_pnl is not None
    assert_consistent(world, fake)


def test_a_leg_gone_with_no_execution_is_read_twice_then_the_other_leg_is_unwound(world, fake):
    """The y position is gone and no execution explains it (read twice): x is closed at once instead of being held
    alone behind a mismatch halt; the trade ends "reconciled" (y's result is unknown)."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    with fake._lock:
        del fake._positions["YYYUSDT"]
    for minutes in range(6, 10):  # the reconciliation (every 5 minutes) finds it, then the unwind runs
        tick(world, now=world.now + minutes * MINUTE)
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == PairTrade.ExitReason.RECONCILED, trade.error
    assert trade.orders.get(leg="x", action=Order.Action.UNWIND).status == Order.Status.FILLED
    assert not trade.orders.filter(leg="y", action=Order.Action.UNWIND).exists()  # nothing to close there
    assert fake.position("XXXUSDT").size == 0 and fake.position("YYYUSDT").size == 0
    assert GuardEvent.objects.filter(kind="leg_closed_outside").exists()


@pytest.mark.parametrize("kind", ["BustTrade", "AdlTrade"])
def test_legs_the_exchange_closed_itself_end_the_trade_closed_by_the_exchange_not_by_hand(world, fake, kind):
    """Both legs liquidated (or auto-deleveraged): the executions are adopted with their prices, and the trade's
    exit reason says the exchange closed it, not a person."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    fake.liquidate("YYYUSDT", kind=kind)
    fake.liquidate("XXXUSDT", kind=kind)
    tick(world, now=world.now + 6 * MINUTE)  # the next reconciliation
    trade = world.trade()
    assert (trade.state, trade.exit_reason) == (PairTrade.State.CLOSED, PairTrade.ExitReason.EXCHANGE), trade.error
    assert trade.realised_pnl is not None
    doing = {"BustTrade": "liquidation", "AdlTrade": "auto-deleveraging"}[kind]
    assert all(f"the exchange's {doing}" in o.error for o in trade.orders.filter(action=Order.Action.RECONCILE))
    assert_consistent(world, fake)
