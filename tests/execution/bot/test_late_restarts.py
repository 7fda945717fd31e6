"""A bot that comes back long after it stopped, against the real ccxt client and the fake Bybit v5 server: what it
had planned or sent before it stopped is looked up by client id and decided at once, never left in flight with a
leg alone.

- An order sent more than 7 days before the restart: its fills are read from its start (Bybit's execution list
  answers only the last 7 days without one), and a fill list that stays short of the order is reported.
- A close (or unwind) planned before the crash is sent at once whatever its age; a stale second opening leg is sent
  at once while the entry holds, else the filled first leg is unwound at once; a stale first leg is still not sent.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from execution.models import BotHeartbeat, Fill, Order, PairTrade, Signal, SignalState
from execution.services.orders import FILLS_MISSING_ALERT, STALE_PLAN
from notifications.models import Notification
from risk.models import GuardEvent
from tests.execution.bot.fault_world import Killed, assert_consistent, exchange_of, tick
from tests.factories import HaltFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

DAY_MS = 24 * 60 * 60 * 1000
LATE = STALE_PLAN + timedelta(minutes=1)


def die_at(step: str):
    def checkpoint(name: str) -> None:
        if name == step:
            raise Killed(name)
    return checkpoint


def restart(world, *, now, owner: str = "bot-restarted"):
    """A new process, its predecessor's lease expired, ticking at ``now``."""
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)
    return tick(world, owner=owner, now=now)


def open_leg_orders(fake, symbol: str) -> list:
    return [o for o in fake.orders(symbol=symbol) if o.order_link_id.startswith("sa")]


# ------------------------------------------------------------------------------------ an order older than 7 days


def test_an_order_filled_eight_days_before_the_restart_is_settled_from_its_fills(world, fake, monkeypatch):
    """The bot dies right after the y leg went out and is down 8 days: the y order's fills are older than the
    execution list's default window. They are read from the order's start, the order is final with them, and the
    trade is decided (its entry long gone: the y leg is unwound) instead of staying in flight with y alone."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=die_at("after_send:yo1"))
    assert fake.position("YYYUSDT").size == 5
    real_clock = fake._clock
    monkeypatch.setattr(fake, "_clock", lambda: real_clock() + 8 * DAY_MS)  # 8 days pass at the exchange

    restart(world, now=world.now + timedelta(days=8))

    y = Order.objects.get(leg="y", action=Order.Action.OPEN)
    assert (y.status, y.filled_qty) == (Order.Status.FILLED, 5)
    assert Fill.objects.filter(order=y).count() == 1
    trade = world.trade()
    assert trade.state == PairTrade.State.UNWOUND, trade.error
    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    assert not Notification.objects.filter(topic="fills_missing").exists()
    assert_consistent(world, fake)


class FillsHidden:
    """The real adapter, but the execution list shows none of the y open's fills while ``hidden``."""

    def __init__(self, inner):
        self._inner, self.hidden = inner, True

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def fills_of(self, symbol, client_order_id=None, **kwargs):
        if self.hidden and client_order_id and client_order_id.endswith("yo1"):
            return []
        return self._inner.fills_of(symbol, client_order_id, **kwargs)


def test_fills_that_stay_short_of_the_order_are_reported_once(world, fake):
    """The exchange says y filled 5 but lists none of its executions: the order stays in flight (its fills make
    the PnL), and once that lasts past FILLS_MISSING_ALERT people are told, once (a critical guard event and
    notification); when the executions show, the trade goes on."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    exchange = FillsHidden(exchange_of(world))
    world.tick(exchange=exchange)
    minutes = int(FILLS_MISSING_ALERT.total_seconds() // 60)
    for k in range(1, minutes + 1):  # up to the alert's threshold: nothing reported yet
        world.tick(exchange=exchange, now=world.now + timedelta(minutes=k))
    y = Order.objects.get(leg="y", action=Order.Action.OPEN)
    assert y.status == Order.Status.SUBMITTED and world.trade().state == PairTrade.State.OPENING
    assert not Notification.objects.filter(topic="fills_missing").exists()

    for k in (minutes + 1, minutes + 2):
        world.tick(exchange=exchange, now=world.now + timedelta(minutes=k))
    (notification,) = Notification.objects.filter(topic="fills_missing")
    assert notification.severity == Notification.Severity.CRITICAL and y.client_order_id in notification.text
    (event,) = GuardEvent.objects.filter(kind="fills_missing")
    assert event.severity == GuardEvent.Severity.CRITICAL and event.details["order"] == y.client_order_id

    exchange.hidden = False
    world.tick(exchange=exchange, now=world.now + timedelta(minutes=minutes + 3))
    y.refresh_from_db()
    assert (y.status, y.filled_qty) == (Order.Status.FILLED, 5)
    assert world.trade().state == PairTrade.State.OPEN
    assert_consistent(world, fake)


# --------------------------------------------------------------------------------------- plans older than STALE_PLAN


def test_a_close_planned_before_the_crash_goes_out_at_once_after_a_late_restart(world, fake):
    """The y close was planned, then the process died; it comes back after STALE_PLAN. A close never goes stale:
    looked up by its client id, not found, it is sent at once (attempt 1), and x's close with it: both legs are
    flat in the restart's tick, none is held alone while a grace runs out."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    world.next_bar(action=Signal.Action.EXIT)
    with pytest.raises(Killed):
        tick(world, checkpoint=die_at("planned:yc1"))
    assert fake.position("YYYUSDT").size == 5

    restart(world, now=world.now + LATE)

    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED, trade.error
    y_closes = trade.orders.filter(leg="y", action=Order.Action.CLOSE)
    assert [(o.attempt, o.status) for o in y_closes] == [(1, Order.Status.FILLED)]
    assert_consistent(world, fake)


def test_a_stale_second_leg_whose_entry_holds_goes_out_at_once(world, fake):
    """y filled, the process died before x went out, and it comes back after STALE_PLAN, still within the entry
    signal's freshness: x is sent at once under its own id (not held for the grace, then completed)."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=die_at("before_send:xo1"))
    assert fake.position("YYYUSDT").size == 5 and fake.position("XXXUSDT").size == 0

    restart(world, now=world.now + LATE)

    assert fake.position("XXXUSDT").size == Decimal("-8.5")
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN, trade.error
    x = trade.orders.get(leg="x")  # no completion order: the open itself went out
    assert (x.action, x.status, x.filled_qty) == (Order.Action.OPEN, Order.Status.FILLED, Decimal("8.5"))
    assert_consistent(world, fake)


@pytest.mark.parametrize("lapse", ["signal_old", "rule_left", "halt"])
def test_a_stale_second_leg_whose_entry_lapsed_unwinds_the_first_at_once(world, fake, lapse):
    """The same, but the entry no longer holds when the bot comes back (its signal no longer fresh, the rule out of
    the position, or a halt): x is not sent, and the y leg is unwound in the restart's tick."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=die_at("before_send:xo1"))
    later = world.now + LATE
    if lapse == "signal_old":
        later = world.now + timedelta(hours=3)
    elif lapse == "rule_left":
        SignalState.objects.update(position=0)
    else:
        HaltFactory(account=world.account, reason="guard: daily loss")

    restart(world, now=later)

    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    assert not open_leg_orders(fake, "XXXUSDT")
    trade = world.trade()
    assert trade.state == PairTrade.State.UNWOUND, trade.error
    x = trade.orders.get(leg="x")
    assert x.status == Order.Status.CANCELLED and x.error.startswith("never sent")
    assert_consistent(world, fake)


def test_a_stale_first_leg_is_still_not_sent(world, fake):
    """STALE_PLAN's own case, kept: the process died before the y leg went out and comes back after STALE_PLAN. The
    market has moved on: y is not sent late (looked up until the grace passes), and the trade fails holding
    nothing."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    with pytest.raises(Killed):
        tick(world, checkpoint=die_at("before_send:yo1"))

    restart(world, now=world.now + LATE)
    y = Order.objects.get(leg="y")
    assert y.status == Order.Status.UNKNOWN and "not sent again" in y.error
    for k in (1, 2, 3):
        tick(world, owner="bot-restarted", now=world.now + LATE + timedelta(minutes=k))

    assert not fake.orders()
    assert world.trade().state == PairTrade.State.FAILED
    assert_consistent(world, fake)

