"""The world of the fault tests: the real engine and the real ccxt client against the fake Bybit v5 server (demo and
real modes), with helpers that tick, restart and check that the account is consistent."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from execution.models import BotHeartbeat, Fill, Order, PairTrade
from execution.selectors import Credentials
from execution.services.orders import LEGS, leg_net
from execution.venues import account_exchange
from tests.execution.bot_world import BotWorld
from tests.fakes.bybit import FakeBybit

CREATE = "/v5/order/create"
SYMBOL = {"y": "YYYUSDT", "x": "XXXUSDT"}
CCXT_SYMBOL = {"y": "YYY/USDT:USDT", "x": "XXX/USDT:USDT"}


class Killed(BaseException):
    """The process dies: nothing after this point runs (BaseException: no `except Exception` catches it)."""


def exchange_of(world: BotWorld, timeout_ms: int = 1000):
    return account_exchange(world.account, Credentials("key-of-the-test", "secret-of-the-test"),
                            timeout_ms=getattr(world, "timeout_ms", timeout_ms), enable_rate_limit=False)


def tick(world: BotWorld, **kwargs):
    return world.tick(exchange=exchange_of(world), **kwargs)


def restart(world: BotWorld, owner: str = "bot-restarted"):
    """A new process: the dead one's lease has expired (its TTL passed)."""
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)
    return tick(world, owner=owner)


def assert_consistent(world: BotWorld, fake: FakeBybit) -> None:
    """No duplicate order, every order of the bot known to the database with the exchange's filled quantity, every
    execution of an order not placed by the bot (by hand) adopted as a fill, every trade final and flat or open, and
    the exchange's positions equal to what the open trades hold."""
    fake_orders = fake.orders()
    link_ids = [o.order_link_id for o in fake_orders]
    assert len(link_ids) == len(set(link_ids)), f"duplicate orders at the exchange: {link_ids}"
    db_orders = {o.client_order_id: o for o in Order.objects.all()}
    ours = [o for o in fake_orders if o.order_link_id.startswith("sa")]
    assert {o.order_link_id for o in ours} <= set(db_orders), "an order of the bot the database doesn't know"
    for order in ours:
        assert db_orders[order.order_link_id].filled_qty == order.cum_exec_qty, order.order_link_id
    recorded = set(Fill.objects.values_list("exchange_fill_id", flat=True))
    for order in fake_orders:
        if not order.order_link_id.startswith("sa"):
            executions = {e.exec_id for e in fake.executions(order_link_id=order.order_link_id)}
            assert executions <= recorded, f"{order.order_link_id}: executions not adopted"
    expected = {symbol: Decimal(0) for symbol in SYMBOL.values()}
    for trade in PairTrade.objects.all():
        orders = list(trade.orders.all())
        for leg in LEGS:
            expected[SYMBOL[leg]] += leg_net(orders, leg)
        if trade.state in PairTrade.FINAL_STATES:
            assert all(leg_net(orders, leg) == 0 for leg in LEGS), f"trade {trade.pk} final but not flat"
        else:
            assert trade.state == PairTrade.State.OPEN, f"trade {trade.pk} left {trade.state}"
    held = {symbol: fake.position(symbol).size for symbol in SYMBOL.values()}
    assert held == expected, f"exchange holds {held}, trades hold {expected}"




def tick_until_settled(world: BotWorld, *, ticks: int = 6, minutes: int = 1):
    """Tick a minute apart (the grace periods run on the tick's clock) until no trade is in flight."""
    report = None
    for k in range(ticks):
        report = tick(world, now=world.now + timedelta(minutes=minutes * k))
        if not PairTrade.objects.filter(state__in=(PairTrade.State.PLANNED, PairTrade.State.OPENING,
                                                   PairTrade.State.CLOSING)).exists():
            break
    return report


def lag_order_lookups(monkeypatch, *, client_id_suffix: str, times: int) -> None:
    """The exchange's order lists lag: the first ``times`` look-ups of the order whose client id ends with
    ``client_id_suffix`` find nothing, later ones find it (what Bybit does for a few seconds after an accept)."""
    from exchanges.bybit import BybitExchange

    original = BybitExchange.order_by_client_id
    left = {"n": times}

    def lagging_lookup(self, symbol, client_order_id, **kwargs):
        if client_order_id.endswith(client_id_suffix) and left["n"] > 0:
            left["n"] -= 1
            return None
        return original(self, symbol, client_order_id, **kwargs)

    monkeypatch.setattr(BybitExchange, "order_by_client_id", lagging_lookup)
