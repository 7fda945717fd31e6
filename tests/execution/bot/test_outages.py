"""The exchange down for minutes in the middle of a trade (every request answered 503 by its gateway), against the
real ccxt client and the fake Bybit (demo and real modes): the bot trades nothing while it lasts and, once the
exchange is back, finishes the trade or unwinds its lone leg; nothing is sent twice."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from execution.models import Order, PairTrade, Signal
from notifications.models import Notification
from tests.execution.bot.fault_world import assert_consistent, tick

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def down_after_the_first_leg(fake):
    def checkpoint(step: str) -> None:
        if step == "after_send:yo1":
            fake.http_error_next(None, 503, times=100_000)
    return checkpoint


@pytest.mark.parametrize(("minutes", "outcome", "told"), [(10, PairTrade.State.OPEN, "trade_opened"),
                                                          (90, PairTrade.State.UNWOUND, "trade_unwound")])
def test_exchange_down_between_the_legs(world, fake, minutes, outcome, told):
    """Down for 10 minutes: the entry still holds (its signal is the newest bar's) and the second leg goes out when
    the exchange is back. Down for 90 minutes: the entry has lapsed (a newer bar closed, the rule flat), so the
    filled first leg is unwound, not hedged late."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    start = world.now
    report = tick(world, checkpoint=down_after_the_first_leg(fake))
    assert report.status == "exchange_unreachable", report
    assert fake.position("YYYUSDT").size == Decimal("5") and fake.position("XXXUSDT").size == 0
    for minute in range(1, minutes, 7):
        report = tick(world, now=start + timedelta(minutes=minute))
        assert report.status in ("exchange_unreachable", "reconcile_failed"), report
    if minutes > 60:
        world.next_bar(action=Signal.Action.HOLD, position=0)
    fake.clear_faults()
    for minute in range(minutes, minutes + 4):
        report = tick(world, now=start + timedelta(minutes=minute))
    trade = world.trade()
    assert trade.state == outcome, (trade.error, report)
    assert_consistent(world, fake)
    assert len(fake.orders()) == len({o.order_link_id for o in fake.orders()})
    assert Order.objects.filter(trade=trade, leg="y", action=Order.Action.OPEN).get().status == "filled"
    # What the bot tells the trader (the outage itself is the guard's to report: exchange_unreachable, one_leg).
    assert list(Notification.objects.values_list("topic", flat=True)) == [told]


@pytest.mark.parametrize("minutes", [3, 40])
def test_exchange_down_between_the_closes(world, fake, minutes):
    """The first leg's close went out, then the exchange went down: once it is back the other leg's close goes out
    (a close never goes stale) and the trade closes; nothing closed twice."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    world.next_bar(action=Signal.Action.EXIT)
    start = world.now

    def down(step: str) -> None:
        if step == "after_send:yc1":
            fake.http_error_next(None, 503, times=100_000)

    report = tick(world, checkpoint=down)
    assert report.status == "exchange_unreachable", report
    for minute in range(1, minutes, 7):
        tick(world, now=start + timedelta(minutes=minute))
    fake.clear_faults()
    for minute in range(minutes, minutes + 4):
        report = tick(world, now=start + timedelta(minutes=minute))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED, (trade.error, report)
    assert fake.position("XXXUSDT").size == 0 and fake.position("YYYUSDT").size == 0
    assert_consistent(world, fake)
    assert sorted(Notification.objects.values_list("topic", flat=True)) == ["trade_closed", "trade_opened"]
