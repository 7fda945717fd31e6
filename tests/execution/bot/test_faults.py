"""Faults the bot must survive, against the real ccxt client and the fake Bybit v5 server (demo and real modes).

After each fault (and the ticks that recover from it) the account must have: no orphan leg (the exchange's
positions equal what the open trades hold), no duplicate order (each client order id once at the exchange, each
known to the database), and every trade in a consistent state.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection

from execution.models import BotHeartbeat, Fill, FundingPayment, Order, PairTrade, Signal
from risk.models import Halt
from tests.execution.bot.fault_world import CREATE, Killed, assert_consistent, exchange_of, restart, tick
from tests.factories import HaltFactory

# Transactional (other threads and processes must see the rows); serialized rollback puts the migrations' seed rows
# back afterwards, as the other transactional tests of the suite expect.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_normal_round_trip_on_the_exchange(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = tick(world)
    assert report.status == "ok" and report.opened == 1, report
    assert fake.position("YYYUSDT").size == Decimal("5") and fake.position("XXXUSDT").size == Decimal("-8.5")
    opened = world.trade()
    # An open trade's row carries its opening fees (the reports show them), not 0 until its close.
    assert opened.fees == sum(f.fee for f in Fill.objects.filter(order__trade=opened)) > 0
    fake.set_price("YYYUSDT", "103")
    world.next_bar(y="103", action=Signal.Action.EXIT)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.realised_pnl is not None
    assert_consistent(world, fake)


def test_timeout_after_the_exchange_accepted_the_order(world, fake):
    fake.timeout_after_accept_next(CREATE, symbol="YYYUSDT")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    assert len(fake.orders(symbol="YYYUSDT")) == 1
    assert_consistent(world, fake)


def test_second_leg_rejected_is_completed(world, fake):
    fake.reject_next_order("XXXUSDT", 110007, "ab not enough for new order")  # once: the completion goes through
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN
    assert trade.orders.filter(action=Order.Action.COMPLETE, leg="x").exists()
    assert_consistent(world, fake)


def test_second_leg_rejected_twice_unwinds_the_first(world, fake):
    fake.reject_next_order("XXXUSDT", 110007, "ab not enough for new order", times=5)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.UNWOUND and trade.exit_reason == PairTrade.ExitReason.UNWOUND
    assert trade.realised_pnl is not None and trade.realised_pnl < 0  # fees of the lone leg, both ways
    unwind = trade.orders.get(action=Order.Action.UNWIND)
    assert unwind.reduce_only and unwind.leg == "y" and unwind.side == "sell"
    assert "the x leg holds 0 of 8.5 after completing it failed; unwinding both legs" in trade.error, trade.error
    assert_consistent(world, fake)


def test_first_leg_rejected_fails_without_touching_the_second(world, fake):
    fake.reject_next_order("YYYUSDT", 110007, "ab not enough for new order")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.FAILED and trade.realised_pnl is None
    assert fake.orders(symbol="XXXUSDT") == []
    assert trade.orders.get(leg="x").status == Order.Status.CANCELLED
    assert_consistent(world, fake)


def test_partial_fill_is_completed(world, fake):
    fake.partial_fill_next("XXXUSDT", "0.5", then="cancel")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN
    complete = trade.orders.get(action=Order.Action.COMPLETE)
    assert complete.qty == Decimal("4.25") and complete.status == Order.Status.FILLED
    assert_consistent(world, fake)


def test_partial_fill_on_close_is_closed_by_a_second_attempt(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    fake.partial_fill_next("YYYUSDT", "0.4", then="cancel")
    world.next_bar(action=Signal.Action.EXIT)
    tick(world)
    assert world.trade().state == PairTrade.State.CLOSING  # one close attempt per leg and tick
    assert_consistent_positions = fake.position("YYYUSDT").size == Decimal("3")
    assert assert_consistent_positions
    tick(world, now=world.now + timedelta(minutes=1))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED
    assert trade.orders.filter(action=Order.Action.CLOSE, leg="y").count() == 2
    assert_consistent(world, fake)


OPEN_STEPS = ["planned:trade", "before_send:yo1", "after_send:yo1", "before_send:xo1", "after_send:xo1"]
CLOSE_STEPS = ["closing", "planned:yc1", "before_send:yc1", "after_send:yc1", "planned:xc1", "before_send:xc1",
               "after_send:xc1"]


def killer(step: str):
    def checkpoint(name: str) -> None:
        if name == step:
            raise Killed(step)

    return checkpoint


@pytest.mark.parametrize("step", OPEN_STEPS)
def test_killed_while_opening_then_restarted(world, fake, step):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=killer(step))
    report = restart(world)
    assert report.status == "ok" and report.reconciled, report
    assert world.trade().state == PairTrade.State.OPEN
    assert_consistent(world, fake)
    world.next_bar(action=Signal.Action.EXIT)
    tick(world, owner="bot-restarted")
    assert world.trade().state == PairTrade.State.CLOSED
    assert_consistent(world, fake)


@pytest.mark.parametrize("step", CLOSE_STEPS)
def test_killed_while_closing_then_restarted(world, fake, step):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    world.next_bar(action=Signal.Action.EXIT)
    with pytest.raises(Killed):
        tick(world, checkpoint=killer(step))
    report = restart(world)
    assert report.status == "ok" and report.reconciled, report
    assert world.trade().state == PairTrade.State.CLOSED
    assert_consistent(world, fake)


def test_two_workers_for_one_account_trade_once(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    barrier = threading.Barrier(2)
    reports = {}

    def run(owner):
        try:
            barrier.wait()
            reports[owner] = tick(world, owner=owner)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(f"worker-{k}",)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.status for r in reports.values()) == ["locked", "ok"], reports
    assert len(world.trades()) == 1 and len(fake.orders()) == 2
    assert_consistent(world, fake)


def _lose_database_connection() -> None:
    """The database server drops this process's connection (MariaDB: KILL from another session)."""
    if connection.vendor == "mysql":
        import MySQLdb

        with connection.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (connection_id,) = cursor.fetchone()
        params = connection.get_connection_params()
        other = MySQLdb.connect(**{k: v for k, v in params.items() if k in ("host", "port", "user", "passwd",
                                                                              "password", "database", "db")})
        try:
            other.cursor().execute(f"KILL CONNECTION {int(connection_id)}")
        finally:
            other.close()
    else:
        connection.connection.close()  # SQLite has no server: the handle goes away under Django's feet


def test_database_connection_lost_in_the_middle_of_a_tick(world, fake):
    def lose_connection(step):
        if step == "after_send:yo1":
            _lose_database_connection()

    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Exception) as raised:
        tick(world, checkpoint=lose_connection)
    assert "Killed" not in type(raised.value).__name__
    try:  # what Celery's Django fix-up does after a failed task: drop the broken connection, ignore its errors
        connection.close()
    except DatabaseError:
        pass
    report = tick(world)  # the same worker, next tick: it still holds the lease
    assert report.status == "ok", report
    assert world.trade().state == PairTrade.State.OPEN
    assert len(fake.orders(symbol="YYYUSDT")) == 1
    assert_consistent(world, fake)


def test_position_closed_outside_the_bot_is_settled_and_orphans_halt(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    # someone flattens both legs by hand on the exchange
    client = exchange_of(world)
    client.place_order(symbol="YYY/USDT:USDT", side="sell", qty=Decimal("5"), client_order_id="by-hand-1",
                       reduce_only=True)
    client.place_order(symbol="XXX/USDT:USDT", side="buy", qty=Decimal("8.5"), client_order_id="by-hand-2",
                       reduce_only=True)
    report = restart(world)
    trade = world.trade()
    # The exchange's executions are the truth: the hand-made orders are adopted with their real prices and fees,
    # so the trade closes "by hand" with a realised PnL.
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == PairTrade.ExitReason.MANUAL
    adopted = trade.orders.filter(action=Order.Action.RECONCILE)
    assert sorted(adopted.values_list("leg", "side", "filled_qty")) == [
        ("x", "buy", Decimal("8.5")), ("y", "sell", Decimal("5"))]
    assert {f.exchange_fill_id for f in Fill.objects.filter(order__in=adopted)} == {
        e.exec_id for e in fake.executions() if e.order_link_id.startswith("by-hand")}
    assert trade.realised_pnl is not None and trade.fees > 0
    assert report.mismatches == []
    # and a position nobody explains halts new trades until it is gone
    client.place_order(symbol="XXX/USDT:USDT", side="buy", qty=Decimal("1"), client_order_id="by-hand-3")
    report = restart(world, owner="bot-3")
    assert report.mismatches and "XXX" in report.mismatches[0]
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = tick(world, owner="bot-3")
    assert len(world.trades()) == 1 and report.skipped
    client.place_order(symbol="XXX/USDT:USDT", side="sell", qty=Decimal("1"), client_order_id="by-hand-4",
                       reduce_only=True)
    report = restart(world, owner="bot-4")
    assert report.mismatches == []
    from risk.models import Halt

    assert not Halt.objects.filter(cleared_at__isnull=True).exists()


def _held_through_the_8am_settlement(world, fake) -> None:
    """A trade opened at 02:00 and held to 09:00; both legs' funding settled at 08:00 on the exchange."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)  # opens at 02:00
    tick(world)
    while world.now.hour != 9:  # the 08:00 settlement lies between this tick and the last
        world.next_bar(action=Signal.Action.HOLD, position=1)
    settled_ms = int(world.now.replace(hour=8).timestamp() * 1000)
    fake.settle_funding("YYYUSDT", "0.0001", time_ms=settled_ms)
    fake.settle_funding("XXXUSDT", "0.0001", time_ms=settled_ms)


def test_funding_from_the_exchange_is_recorded_on_the_trade(world, fake):
    _held_through_the_8am_settlement(world, fake)
    tick(world)
    trade = world.trade()
    amounts = dict(FundingPayment.objects.filter(trade=trade).values_list("instrument__symbol", "amount"))
    assert amounts["YYYUSDT"] < 0 < amounts["XXXUSDT"]
    assert trade.funding == amounts["YYYUSDT"] + amounts["XXXUSDT"]


def test_a_remainder_below_the_minimum_is_kept_rather_than_unwound(world, fake):
    world.x.min_qty = Decimal("5")
    world.x.save()
    fake.partial_fill_next("XXXUSDT", "0.6", then="cancel")  # 5.1 of 8.5: the missing 3.4 is below min qty 5
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN and trade.x_qty == Decimal("5.1")
    assert "below the minimum" in trade.error
    assert_consistent(world, fake)


# ---------------------------------------------------------------------------------------------- review findings


class LaggingExchange:
    """The real adapter, but the exchange's order look-up and execution list lag behind its order book for the
    first ``lookups`` / ``fills`` calls (as an eventually consistent API can)."""

    def __init__(self, inner, *, lookups: int = 0, fills: int = 0):
        self._inner, self._lookups, self._fills = inner, lookups, fills

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def order_by_client_id(self, symbol, client_order_id, **kwargs):
        if self._lookups > 0:
            self._lookups -= 1
            return None
        return self._inner.order_by_client_id(symbol, client_order_id, **kwargs)

    def fills_of(self, symbol, client_order_id=None, **kwargs):
        if self._fills > 0:
            self._fills -= 1
            return []
        return self._inner.fills_of(symbol, client_order_id, **kwargs)


def test_a_halt_raised_after_planning_stops_the_first_leg(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=killer("planned:trade"))
    HaltFactory(account=world.account, reason="trader stops everything")
    restart(world)
    # The dead process may have sent it just before it stopped: not sent again under the halt, looked up until the
    # grace passes (the exchange's lists lag), then given up.
    order = Order.objects.get(trade=world.trade(), leg="y")
    assert order.status == Order.Status.UNKNOWN and world.trade().state == PairTrade.State.PLANNED
    tick(world, owner="bot-restarted", now=world.now + timedelta(minutes=3))
    trade = world.trade()
    assert trade.state == PairTrade.State.FAILED and "halt" in trade.error
    assert fake.orders() == []
    assert_consistent(world, fake)


@pytest.mark.parametrize("scope", ("account", "pair"))
def test_a_halt_raised_in_the_same_tick_after_planning_stops_the_first_leg(world, fake, scope):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)

    def halt_after_planning(step):
        # The guard (or a person) decides while this tick is between planning the trade and sending its first leg.
        if step.startswith("planned:") and not Halt.objects.exists():
            HaltFactory(account=world.account, pair=world.pair if scope == "pair" else None, reason="guard: stop")

    tick(world, checkpoint=halt_after_planning)
    trade = world.trade()
    assert trade.state == PairTrade.State.FAILED and "halt" in trade.error
    assert fake.orders() == []
    assert_consistent(world, fake)


def test_restart_with_a_lagging_order_lookup_never_leaves_a_lone_leg(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=killer("after_send:yo1"))
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)
    world.tick(exchange=LaggingExchange(exchange_of(world), lookups=2), owner="bot-restarted")
    assert world.trade().state in (PairTrade.State.OPENING, PairTrade.State.OPEN)
    tick(world, owner="bot-restarted", now=world.now + timedelta(minutes=1))
    assert world.trade().state == PairTrade.State.OPEN
    assert_consistent(world, fake)


def test_fills_listed_late_are_waited_for_and_pnl_is_complete(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick(exchange=LaggingExchange(exchange_of(world), fills=3))
    assert world.trade().state == PairTrade.State.OPENING  # the y leg filled, its fills aren't listed yet
    tick(world, now=world.now + timedelta(minutes=1))
    assert world.trade().state == PairTrade.State.OPEN
    world.next_bar(y="102", action=Signal.Action.EXIT)
    fake.set_price("YYYUSDT", "102")
    tick(world)
    trade = world.trade()
    fills = Fill.objects.filter(order__trade=trade)
    assert sum(f.qty for f in fills) == sum(o.filled_qty for o in trade.orders.all())
    assert trade.state == PairTrade.State.CLOSED and Decimal("5") < trade.realised_pnl < Decimal("11")


def test_a_resting_remainder_is_cancelled_and_completed(world, fake):
    fake.partial_fill_next("XXXUSDT", "0.5", then="rest")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN
    assert fake.order(order_link_id=trade.orders.get(leg="x", action=Order.Action.OPEN).client_order_id).status \
        == "PartiallyFilledCanceled"
    assert_consistent(world, fake)


def test_a_remainder_below_the_minimum_notional_is_kept(world, fake):
    world.x.min_notional = Decimal("5")
    world.x.save()
    fake.partial_fill_next("XXXUSDT", "0.995", then="cancel")  # 8.45 of 8.5: the 0.05 left is 2.5 USDT
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN and trade.x_qty == Decimal("8.45")
    assert_consistent(world, fake)


def test_a_crashing_tick_does_not_report_ok(world, fake):
    def crash(step):
        if step == "planned:trade":
            raise RuntimeError("a bug")

    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(RuntimeError):
        tick(world, checkpoint=crash)
    assert BotHeartbeat.objects.get(account=world.account).status == "error: RuntimeError"


def test_stray_orders_are_cancelled_if_ours_and_flagged_if_not(world, fake):
    client = exchange_of(world)
    fake.partial_fill_next("YYYUSDT", "0", then="rest")
    ours = f"sa{world.account.pk}-9-0-yo1"  # the bot's id scheme, but no trade of the database waits for it
    client.place_order(symbol="YYY/USDT:USDT", side="buy", qty=Decimal("1"), client_order_id=ours)
    fake.partial_fill_next("XXXUSDT", "0", then="rest")
    client.place_order(symbol="XXX/USDT:USDT", side="buy", qty=Decimal("1"), client_order_id="someone-else-1")
    report = restart(world)
    assert fake.order(order_link_id=ours).status == "Cancelled"
    assert fake.order(order_link_id="someone-else-1").status in ("New", "PartiallyFilled")
    assert any("someone-else-1" in m and "not the bot's" in m for m in report.mismatches)


def test_funding_whose_read_failed_in_the_closing_tick_is_recorded_on_the_closed_trade(world, fake):
    _held_through_the_8am_settlement(world, fake)
    fake.fail_next("/v5/execution/list", 10016, "Server error", params={"execType": "Funding"}, times=5)  # retries too
    world.next_bar(action=Signal.Action.EXIT)
    report = tick(world)  # the trade closes in the tick whose funding read failed
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.funding == 0
    assert any("funding not synced" in event for event in report.events), report.events
    pnl_before = trade.realised_pnl
    assert not FundingPayment.objects.exists()

    world.next_bar(action=Signal.Action.HOLD, position=0)
    tick(world)  # no trade is open any more: the payment still goes to the trade that held the position
    trade.refresh_from_db()
    amounts = dict(FundingPayment.objects.filter(trade=trade).values_list("instrument__symbol", "amount"))
    assert amounts["YYYUSDT"] < 0 < amounts["XXXUSDT"]
    assert not FundingPayment.objects.filter(trade__isnull=True).exists()
    assert trade.funding == amounts["YYYUSDT"] + amounts["XXXUSDT"]
    assert trade.realised_pnl == pnl_before + trade.funding
    assert BotHeartbeat.objects.get(account=world.account).funding_unsynced_since is None
    world.next_bar(action=Signal.Action.HOLD, position=0)
    tick(world)
    assert FundingPayment.objects.count() == 2  # recorded once
