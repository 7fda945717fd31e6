"""Ambiguous exchange answers never leave a leg behind (issue #12), against the fake Bybit v5 server and the real ccxt
client, in demo and real mode.

For each leg (y, x) and each action (open, close, complete, unwind), an error answer comes back for that order:
retCode 10016, a 502 gateway page, a dropped connection or a timeout. Either the exchange executed the order before
answering (``executed``) or it did not. Whatever happened, the order is looked up by its client id before anything
is decided (never booked as rejected), sent again under the same id when the exchange shows nothing, and the trade
ends where it would have without the fault: one order per client id at the exchange, the database equal to the
exchange's orders and positions, no orphan or doubled leg.
"""

from __future__ import annotations

import pytest

from execution.models import Order, PairTrade, Signal
from tests.execution.bot.fault_world import CREATE, SYMBOL, assert_consistent, tick, tick_until_settled

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ACTION_CODE = {"open": "o", "close": "c", "complete": "k", "unwind": "u"}
FINAL = {"open": PairTrade.State.OPEN, "complete": PairTrade.State.OPEN, "close": PairTrade.State.CLOSED,
         "unwind": PairTrade.State.UNWOUND}


def inject(fake, fault: str, executed: bool, symbol: str) -> None:
    """One fault on the next order created on ``symbol``."""
    if executed:
        {
            "10016": lambda: fake.error_after_accept_next(CREATE, symbol=symbol),
            "502": lambda: fake.http_error_after_accept_next(CREATE, 502, symbol=symbol),
            "disconnect": lambda: fake.disconnect_next(CREATE, after_accept=True, symbol=symbol),
            "timeout": lambda: fake.timeout_after_accept_next(CREATE, symbol=symbol),
        }[fault]()
    else:
        {
            "10016": lambda: fake.fail_next(CREATE, 10016, "Internal System Error.", symbol=symbol),
            "502": lambda: fake.http_error_next(CREATE, 502, symbol=symbol),
            "disconnect": lambda: fake.disconnect_next(CREATE, symbol=symbol),
            "timeout": lambda: fake.http_error_next(CREATE, 504, symbol=symbol),  # a gateway timeout, not applied
        }[fault]()


def at(actions: dict, fired: list):
    """A checkpoint that runs each of ``actions`` (step -> callable) once, at its step; ``fired`` lists them."""

    def checkpoint(name: str) -> None:
        if name in actions and name not in fired:
            fired.append(name)
            actions[name]()

    return checkpoint


@pytest.mark.parametrize("executed", [True, False], ids=["executed", "not-executed"])
@pytest.mark.parametrize("fault", ["10016", "502", "disconnect", "timeout"])
@pytest.mark.parametrize("action", ["open", "close", "complete", "unwind"])
@pytest.mark.parametrize("leg", ["y", "x"])
def test_an_ambiguous_answer_is_looked_up_and_never_taken_for_a_rejection(world, fake, leg, action, fault, executed):
    world.timeout_ms = 300
    fake.timeout_delay_s = 0.5
    symbol = SYMBOL[leg]
    step = f"before_send:{leg}{ACTION_CODE[action]}1"
    actions = {step: lambda: inject(fake, fault, executed, symbol)}
    if action in ("complete", "unwind"):
        fake.partial_fill_next(symbol, "0.5", then="cancel")
    if action == "unwind":  # the completion is refused (proven), so both legs are unwound
        actions[f"before_send:{leg}k1"] = lambda: fake.reject_next_order(symbol, 110007, "ab not enough for new order")
    fired: list[str] = []
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    if action == "close":
        tick(world)
        assert world.trade().state == PairTrade.State.OPEN
        world.next_bar(action=Signal.Action.EXIT)
    tick(world, checkpoint=at(actions, fired))
    assert step in fired and fake.pending_faults() == [], (fired, fake.pending_faults())  # every fault fired
    tick_until_settled(world)

    trade = world.trade()
    assert trade.state == FINAL[action], (trade.state, trade.error)
    faulted = trade.orders.get(leg=leg, action=action, attempt=1)
    assert faulted.status == Order.Status.FILLED, (faulted.status, faulted.error)
    assert len(fake.orders(symbol=symbol)) == len(set(o.order_link_id for o in fake.orders(symbol=symbol)))
    rejected = list(trade.orders.filter(status=Order.Status.REJECTED).values_list("action", flat=True))
    assert rejected == (["complete"] if action == "unwind" else []), rejected
    assert_consistent(world, fake)
