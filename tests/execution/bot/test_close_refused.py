"""The exit of an open trade when one leg's close would be refused by the exchange (the real ccxt client against the
fake Bybit, demo and real modes): the leg must still end flat, never the other leg closed and this one held alone."""

from __future__ import annotations

from decimal import Decimal

import pytest

from execution.models import PairTrade, Signal
from notifications.models import Notification
from tests.execution.bot.fault_world import assert_consistent, tick

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.parametrize(("min_qty", "qty_step"), [("10", "0.01"), ("1", "1")], ids=["min-qty", "step"])
def test_a_leg_the_exchange_changed_the_quantity_rules_of_still_closes(world, fake, min_qty, qty_step):
    """The exchange raises XXX's minimum order quantity above what the leg holds (8.5), or coarsens its step so
    that 8.5 is off it, after the trade opened (the hourly fetch stores the new rules). A reduce-only close of 8.5
    is refused every time: the y leg closed, the x leg stayed held alone, and after 5 refusals the trade was stuck
    and the account halted for a person to close it by hand."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    with fake._lock:  # the fake's instruments() hands out copies
        fake._instruments["XXXUSDT"].min_qty = Decimal(min_qty)
        fake._instruments["XXXUSDT"].qty_step = Decimal(qty_step)
    world.x.min_qty, world.x.qty_step = Decimal(min_qty), Decimal(qty_step)
    world.x.save()
    world.next_bar(action=Signal.Action.EXIT)
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED, trade.error
    assert fake.position("XXXUSDT").size == 0 and fake.position("YYYUSDT").size == 0
    assert_consistent(world, fake)
    assert sorted(Notification.objects.values_list("topic", flat=True)) == ["trade_closed", "trade_opened"]


def test_on_the_paper_exchange_too():
    """The paper exchange enforces the same rules (minimum quantity, step, reduce-only cut to the position)."""
    from tests.execution.bot_world import BotWorld

    world = BotWorld()
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    assert world.trade().state == PairTrade.State.OPEN
    world.x.min_qty = Decimal("10")
    world.x.save()
    world.next_bar(action=Signal.Action.EXIT)
    world.tick()
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED, trade.error
    assert world.paper_positions(world.account) == {}
