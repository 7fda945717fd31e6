"""The trades one tick holds: read once at the start of the tick, with what every step needs, and their orders
read in one query the first time a step asks for them."""

from __future__ import annotations

from django.db.models import F

from core.statements import CompiledRead
from execution.models import ExchangeAccount, Order, PairTrade
from pairs.models import Instrument

# Every tick reads this (#18: compiled once, core.statements).
_ACTIVE_TRADES = CompiledRead(lambda account_id: (
    PairTrade.objects.filter(account_id=account_id, state__in=PairTrade.ACTIVE_STATES)
    .select_related("pair__y_instrument", "pair__x_instrument")
    .annotate(entry_bar_time=F("entry_signal__bar_time"), rule_position=F("pair__signal_state__position"))
    .order_by("pk")
))


def active_trades(account: ExchangeAccount) -> list[PairTrade]:
    """The account's active trades with their pair and both instruments, in one query. Every tick runs this, so it
    loads only what a tick reads: the account is the caller's object, of the entry signal only its bar time is
    needed (``entry_bar_time``), the rule's position of the pair now (``rule_position``, None before its first
    signal) comes along for the close decisions, and the orders are read when first asked for (``_orders_of``)."""
    trades = _ACTIVE_TRADES.list(account.pk)
    batch = _TickOrders(trades)
    for trade in trades:
        trade.account = account
        trade.order_list = None  # not read yet
        trade.tick_orders = batch
    return trades


class _TickOrders:
    """The orders of one tick's trades, read in one query the first time any of them is asked for: in most ticks
    every trade is simply open, and nothing looks at its orders (they matter for trades in flight, closes, funding
    and reconciliation)."""

    def __init__(self, trades: list[PairTrade]):
        self._trades = trades

    def load(self) -> None:
        waiting = {trade.pk: trade for trade in self._trades if trade.order_list is None}
        orders: dict[int, list[Order]] = {pk: [] for pk in waiting}
        for order in Order.objects.filter(trade_id__in=list(waiting)).order_by("pk"):
            orders[order.trade_id].append(order)
        for pk, trade in waiting.items():
            trade.order_list = orders[pk]
            # An order is on one of its pair's legs: share those instruments instead of loading them again.
            legs = {i.pk: i for i in (trade.pair.y_instrument, trade.pair.x_instrument)}
            for order in trade.order_list:
                order.trade = trade
                if order.instrument_id in legs:
                    order.instrument = legs[order.instrument_id]


def orders_of(trade: PairTrade) -> list[Order]:
    """The trade's orders (``order_list``), read now together with those of the tick's other trades if not yet."""
    if trade.order_list is None:
        trade.tick_orders.load()
    return trade.order_list


def instrument_of(trade: PairTrade, leg: str) -> Instrument:
    return trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument
