"""Settling a trade with the exchange: the exchange's executions are the truth, the database follows them.

When the exchange holds a different quantity on a trade's leg than the trade's recorded fills add up to (a person
closed the leg by hand after the bot gave up, a leg was opened by hand, a liquidation), the executions on that
symbol that no order of the bot accounts for are adopted: recorded, with their real prices and fees, as the fills
of a ``reconcile`` order of the trade, and the difference written down with its cause. Executions of the trade's
own orders that their rows don't hold (an order booked as refused or not executed on an answer that proved
nothing) bring that order up to date from the exchange instead. The trade is then decided on
what it holds, like any other (closed when both legs are flat).

One trade per instrument and account (``execution.bot.entries``) is what makes this exact: every execution on a
trade's symbol since the trade was planned, other than the bot's own orders, belongs to that trade's leg.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.db import transaction

from exchanges.types import FillState, order_state_from_fills
from execution.models import Fill, Order, PairTrade
from execution.services.context import TradingContext
from execution.services.orders import LEGS, Status, client_order_id, leg_net, order_fills_since_ms, order_refresh
from notifications.models import Notification
from notifications.services import notify
from risk.models import GuardEvent
from risk.services import guard_event_record

# Executions a little before the trade was planned are read too (clocks differ); none of them can be its own.
EXECUTIONS_LOOKBACK = timedelta(minutes=1)


@dataclass
class Settlement:
    """What comparing a trade with the exchange found: the legs that differed, what was adopted, and the legs that
    still differ after it (unexplained)."""

    differing: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # notes, one per adopted order
    unexplained: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # leg -> (exchange, trade)
    # Of the executions adopted that no order of the bot made: were they all the exchange's own (liquidation,
    # auto-deleveraging, delivery)? None when none was adopted.
    by_exchange: bool | None = None

    @property
    def changed(self) -> bool:
        return bool(self.adopted)

    @property
    def exit_reason(self) -> str:
        """Why a trade these adoptions flattened ended: closed by the exchange itself, else by hand."""
        return PairTrade.ExitReason.EXCHANGE if self.by_exchange else PairTrade.ExitReason.MANUAL


def instrument_of(trade: PairTrade, leg: str):
    return trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument


def exchange_holdings(ctx: TradingContext, trade: PairTrade, held: dict[str, Decimal] | None = None
                      ) -> dict[str, Decimal]:
    """The exchange's signed position on each leg's symbol (from ``held``, symbol -> qty, when the caller has read
    the positions already)."""
    symbols = {leg: ctx.symbol(instrument_of(trade, leg)) for leg in LEGS}
    if held is None:
        held = {p.symbol: p.qty for p in ctx.exchange.positions(list(symbols.values()))}
    return {leg: held.get(symbol, Decimal(0)) for leg, symbol in symbols.items()}


def settle_with_exchange(ctx: TradingContext, trade: PairTrade, orders: list[Order], *,
                         held: dict[str, Decimal] | None = None) -> Settlement:
    """Compare each leg of ``trade`` with the exchange's position; where they differ, adopt the executions no
    order of the bot accounts for (``orders`` gains the adopted orders). Call only when none of the trade's orders
    is in flight: their own executions are then all recorded."""
    outcome = Settlement()
    holdings = exchange_holdings(ctx, trade, held)
    for leg in LEGS:
        if holdings[leg] != leg_net(orders, leg):
            outcome.differing.append(leg)
    for leg in outcome.differing:
        note = _adopt(ctx, trade, orders, leg, outcome)
        if note:
            outcome.adopted.append(note)
        net = leg_net(orders, leg)
        if holdings[leg] != net:
            outcome.unexplained[leg] = (holdings[leg], net)
    if any(exchange == 0 for exchange, _ in outcome.unexplained.values()):
        _confirm_flat_legs(ctx, trade, outcome, held)
    if outcome.adopted:
        message = f"trade {trade.pk}: " + "; ".join(outcome.adopted)
        with transaction.atomic(savepoint=False):
            guard_event_record(account=ctx.account, kind="executions_adopted", severity=GuardEvent.Severity.WARNING,
                               message=message, details={"trade": trade.pk, "legs": outcome.differing})
            notify(topic="executions_adopted", severity=Notification.Severity.WARNING,
                   text=f"[{ctx.account.name}] {message}")
        ctx.events.append(message)
    return outcome


def _confirm_flat_legs(ctx: TradingContext, trade: PairTrade, outcome: Settlement,
                       held: dict[str, Decimal] | None) -> None:
    """A leg the positions list shows flat while the trade's fills hold it and no execution explains it: before the
    trade is closed or unwound on that, the two symbols' positions are read again on their own. One answer of an
    empty list (a glitch of the exchange's, HTTP 200) would otherwise close a trade whose legs are still held and
    leave them with no trade to manage them. A leg the second read shows as the fills say is no longer
    unexplained; ``held`` (the caller's positions, symbol -> qty) is corrected to the second read."""
    again = exchange_holdings(ctx, trade)
    for leg, (exchange, net) in list(outcome.unexplained.items()):
        if exchange != 0 or again[leg] == 0:
            continue
        symbol = ctx.symbol(instrument_of(trade, leg))
        if held is not None:
            held[symbol] = again[leg]
        if again[leg] == net:
            del outcome.unexplained[leg]
        else:
            outcome.unexplained[leg] = (again[leg], net)
        message = (f"trade {trade.pk}: the positions list showed {symbol} flat, a second read shows {again[leg]} "
                   f"(the fills: {net}); the second read is kept")
        guard_event_record(account=ctx.account, kind="positions_read_contradicted",
                           severity=GuardEvent.Severity.WARNING, message=message,
                           details={"trade": trade.pk, "symbol": symbol})
        ctx.events.append(message)


def _adopt(ctx: TradingContext, trade: PairTrade, orders: list[Order], leg: str, outcome: Settlement) -> str:
    """Record the executions on ``leg``'s symbol since the trade was planned that no order of the bot accounts
    for, as fills of reconcile orders (one per side), after bringing the trade's own orders that the executions
    show more of up to date; a note of what changed, "" when nothing did. ``outcome.by_exchange`` says whether
    what was adopted was all the exchange's own doing."""
    instrument = instrument_of(trade, leg)
    symbol = ctx.symbol(instrument)
    since = trade.created_at - EXECUTIONS_LOOKBACK
    executions = ctx.exchange.executions(symbol, since_ms=int(since.timestamp() * 1000))
    known = set(Fill.objects.filter(order__trade__account=ctx.account, order__instrument=instrument)
                .values_list("exchange_fill_id", flat=True))
    own = {o.client_order_id: o for o in orders if o.leg == leg}
    missed = sorted({e.client_order_id for e in executions if e.exec_id not in known and e.client_order_id in own})
    notes = [note for cid in missed
             if (note := _own_order_corrected(ctx, own[cid], [e for e in executions if e.client_order_id == cid]))]
    ours = f"sa{ctx.account.pk}-"
    foreign = [e for e in executions if e.exec_id not in known and not e.client_order_id.startswith(ours)]
    if not foreign:
        return " and ".join(notes)
    outcome.by_exchange = all(f.by_exchange for f in foreign) and outcome.by_exchange is not False
    for side in ("buy", "sell"):
        fills = [e for e in foreign if e.side == side]
        if fills:
            order = _reconcile_order(ctx, trade, orders, leg, side, fills)
            notes.append(f"adopted {order.leg} leg {side} {order.filled_qty} at {order.avg_price:.8g} in "
                         f"{len(fills)} execution(s) not placed by the bot ({_who(fills)})")
    return " and ".join(notes)


def _own_order_corrected(ctx: TradingContext, order: Order, executions: list[FillState]) -> str:
    """An order of the trade that the exchange executed more of than it is booked with (an answer taken for a
    refusal, a look-up that lagged): brought up to date from the exchange, whose executions are the truth. Its
    ``executions`` (carrying its client id) prove what it did even when the order look-up can't find it."""
    before = (order.status, order.filled_qty)
    state = ctx.exchange.order_by_client_id(ctx.symbol(order.instrument), order.client_order_id,
                                            since_ms=order_fills_since_ms(order))
    if state is None and executions:
        state = order_state_from_fills(executions)
    if state is None or state.filled_qty <= order.filled_qty:
        return ""
    order_refresh(ctx, order, state)
    note = (f"corrected {order.client_order_id}, booked {before[0]} with {before[1]} filled, from the exchange: "
            f"{order.status} with {order.filled_qty} filled")
    # The answer it was booked on stays readable, after what the exchange showed.
    order.error = f"{note} (it had been booked on: {order.error})"[:1000] if order.error else note
    ctx.save(order, ["error", "updated_at"])
    return note


_EXCHANGE_DOINGS = {"BustTrade": "liquidation", "AdlTrade": "auto-deleveraging", "Delivery": "delivery"}


def _who(fills: list[FillState]) -> str:
    doings = sorted({_EXCHANGE_DOINGS[f.exec_type] for f in fills if f.by_exchange})
    ids = sorted({f.client_order_id or f.exchange_order_id for f in fills if not f.by_exchange})
    orders = "orders " + ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "") if ids else ""
    return ", ".join([*(f"the exchange's {d}" for d in doings), *([orders] if orders else [])])


def _reconcile_order(ctx: TradingContext, trade: PairTrade, orders: list[Order], leg: str, side: str,
                     fills: list[FillState]) -> Order:
    qty = sum((f.qty for f in fills), Decimal(0))
    notional = sum((f.qty * f.price for f in fills), Decimal(0))
    attempt = 1 + sum(1 for o in orders if o.leg == leg and o.action == Order.Action.RECONCILE)
    with transaction.atomic(savepoint=False):
        ctx.hold_lease()
        order = Order.objects.create(
            trade=trade, instrument=instrument_of(trade, leg), leg=leg, action=Order.Action.RECONCILE,
            attempt=attempt, side=side, qty=qty, filled_qty=qty, avg_price=notional / qty,
            fee=sum((f.fee for f in fills), Decimal(0)), status=Status.FILLED,
            client_order_id=client_order_id(trade, leg, Order.Action.RECONCILE, attempt),
            exchange_order_id=fills[0].exchange_order_id[:64], planned_at=ctx.now, submitted_at=ctx.now,
            error=f"adopted from the exchange's executions: {_who(fills)}"[:1000],
        )
        Fill.objects.bulk_create([
            Fill(order=order, exchange_fill_id=f.exec_id, qty=f.qty, price=f.price, fee=f.fee,
                 fee_currency=f.fee_currency or "USDT", is_maker=f.is_maker, filled_at=f.filled_at)
            for f in fills
        ])
    orders.append(order)
    return order
