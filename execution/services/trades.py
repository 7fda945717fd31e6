"""The pair trade's state machine: planned -> opening -> open -> closing -> closed, and failed / unwound.

Rules that keep an account from ever being left with one leg:
- Every order row (with its deterministic client order id) is written before the exchange hears of it, and the
  trade's state is written before every exchange call; a process killed anywhere leaves a record of what may have
  reached the exchange, and the next tick looks each such order up by its client id before doing anything else.
- Orders are placed with the exchange's idempotency key (Bybit orderLinkId), so re-sending after a timeout or a
  crash can't double a position.
- The y leg goes first; the x leg is sent only once the y leg has filled. A leg left short (rejected, partly
  filled) is completed once; if that fails too, both legs are unwound with reduce-only orders.
- A trade is decided on only when none of its orders is in flight: the exchange's fills are the truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from execution.exchanges.base import TradingExchange
from execution.exchanges.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from execution.exchanges.retry import call_with_retry
from execution.exchanges.types import FillState, OrderState
from execution.feeds import PriceFeed
from execution.models import ExchangeAccount, Fill, FundingPayment, Order, PairTrade
from execution.sizing import leg_sides
from notifications.models import Notification
from notifications.services import notify
from pairs.models import Instrument, SelectionConfig
from risk.models import GuardEvent
from risk.services import guard_event_record

logger = logging.getLogger(__name__)

State = PairTrade.State
Status = Order.Status
FINAL_ORDER_STATUSES = frozenset({Status.FILLED, Status.PARTIALLY_FILLED, Status.CANCELLED, Status.REJECTED})
ACTION_CODES = {Order.Action.OPEN: "o", Order.Action.COMPLETE: "k", Order.Action.CLOSE: "c", Order.Action.UNWIND: "u"}
LEGS = (Order.Leg.Y, Order.Leg.X)
# Close (or unwind) orders per leg before the trade is declared stuck and handed to a person.
MAX_CLOSE_ATTEMPTS = 5
# How long a market order may stay open at the exchange before the tick moves on (it is looked up next tick).
ORDER_POLLS = 5
ORDER_POLL_INTERVAL_S = 0.2
# An order the exchange doesn't know this long after it was sent never arrived.
NOT_FOUND_GRACE = timedelta(minutes=2)
# A planned order found unsent (the process died before sending it) is sent late only within this time; after it,
# the market has moved on and the trade is treated as if the order had been rejected.
STALE_PLAN = timedelta(minutes=5)
# Renew the bot's lease (2 minutes) when a tick has run this long.
LEASE_RENEW_AFTER_S = 30.0
# A market order still working this long after it was sent is cancelled, and the trade decided on what filled.
MAX_WORKING = timedelta(seconds=30)
# Fills lagging the order status are read again this many times before the order is left for the next tick.
FILL_READS = 3


class TickAborted(Exception):
    """The exchange could not be reached to resolve an order; nothing more is decided this tick."""


def _no_checkpoint(step: str) -> None:
    return None


@dataclass
class TradingContext:
    """What a tick trades with: the account, its exchange, the clock and a few knobs. Tests inject faults through
    ``checkpoint`` (called between every two steps of opening and closing) and the exchange."""

    account: ExchangeAccount
    exchange: TradingExchange
    now: datetime
    config: SelectionConfig
    feed: PriceFeed | None = None
    checkpoint: Callable[[str], None] = _no_checkpoint
    sleep: Callable[[float], None] = time.sleep
    keep_lease: Callable[[], bool] | None = None  # renews the bot's lease; False when another bot took it
    halted: Callable[[], bool] | None = None  # is an active halt stopping new trades (asked before a first leg)
    planned_now: set[int] = field(default_factory=set)  # orders written this tick: known not to be sent yet
    _lease_renewed: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    _symbols: dict[int, str] = field(default_factory=dict)

    def renew_lease(self) -> None:
        """Renew the lease during a long tick (exchange retries can take a while); stop if it was lost."""
        if self.keep_lease is None or time.monotonic() - self._lease_renewed < LEASE_RENEW_AFTER_S:
            return
        if not self.keep_lease():
            raise TickAborted("the bot's lease was lost to another bot: stopping this tick")
        self._lease_renewed = time.monotonic()

    def feed_closes(self, instrument_ids) -> dict[int, Decimal]:
        return self.feed.closes(instrument_ids) if self.feed is not None else {}

    def symbol(self, instrument: Instrument) -> str:
        if instrument.pk not in self._symbols:
            self._symbols[instrument.pk] = self.exchange.symbol_for(instrument)
        return self._symbols[instrument.pk]


# ----------------------------------------------------------------------------------------------------- quantities


def signed(side: str, qty: Decimal) -> Decimal:
    return qty if side == Order.Side.BUY else -qty


def leg_net(orders: list[Order], leg: str) -> Decimal:
    """The position the trade holds in one leg: every fill of every action, signed."""
    return sum((signed(o.side, o.filled_qty) for o in orders if o.leg == leg), Decimal(0))


def leg_targets(trade: PairTrade) -> dict[str, Decimal]:
    y_side, x_side = leg_sides(trade.side, trade.hedge_ratio)
    return {Order.Leg.Y: signed(y_side, trade.y_qty), Order.Leg.X: signed(x_side, trade.x_qty)}


def client_order_id(trade: PairTrade, leg: str, action: str, attempt: int) -> str:
    """Deterministic and unique: account, trade, the trade's creation second (so a rebuilt database can't reuse an
    id the exchange still remembers), leg, action and attempt. At most 36 characters (Bybit orderLinkId)."""
    created = int(trade.created_at.timestamp())
    cid = f"sa{trade.account_id}-{trade.pk}-{created:x}-{leg}{ACTION_CODES[action]}{attempt}"
    if len(cid) > 36:
        raise ValueError(f"client order id {cid!r} is longer than 36 characters")
    return cid


# ------------------------------------------------------------------------------------------------------ exchange io


def _set_state(ctx: TradingContext, trade: PairTrade, state: str, **fields) -> None:
    trade.state = state
    trade.state_changed_at = ctx.now
    for name, value in fields.items():
        setattr(trade, name, value)
    trade.save(update_fields=["state", "state_changed_at", "updated_at", *fields])


def _apply_state(ctx: TradingContext, order: Order, state: OrderState,
                 fills_known: tuple[FillState, ...] | None = None) -> None:
    """Copy what the exchange says about an order (and its fills) into the database. ``fills_known``: the order's
    fills as the exchange already gave them (with the order's acknowledgment); they are read when None or short."""
    order.exchange_order_id = state.exchange_order_id or order.exchange_order_id
    order.filled_qty = state.filled_qty
    order.avg_price = state.avg_price
    order.fee = state.fee
    # In our table "partially_filled" always means: ended with part filled. An order still working is "submitted".
    order.status = Status.SUBMITTED if state.is_open else state.status
    if order.submitted_at is None:
        order.submitted_at = ctx.now
    fills = []
    if state.filled_qty > 0:
        symbol = ctx.symbol(order.instrument)
        for attempt in range(FILL_READS):
            if attempt == 0 and fills_known is not None:
                found = list(fills_known)
            else:
                if attempt:
                    ctx.sleep(ORDER_POLL_INTERVAL_S)
                try:
                    found = call_with_retry(lambda: ctx.exchange.fills_of(symbol, order.client_order_id),
                                            description=f"fills of {order.client_order_id}", sleep=ctx.sleep)
                except ExchangeError as exc:
                    raise TickAborted(f"fills of {order.client_order_id} could not be read: {exc}") from exc
            if sum((f.qty for f in found), Decimal(0)) >= state.filled_qty:
                break
        else:
            # The execution list lags the order: an order isn't final until its fills are all recorded (the PnL
            # is computed from them), so it is read again next tick.
            order.status = Status.SUBMITTED
            ctx.events.append(f"{order.client_order_id}: {state.filled_qty} filled, fewer fills listed yet")
        fills = [Fill(order=order, exchange_fill_id=f.exec_id, qty=f.qty, price=f.price, fee=f.fee,
                      fee_currency=f.fee_currency, is_maker=f.is_maker, filled_at=f.filled_at) for f in found]
    # No savepoint inside a caller's transaction (a replay's bar): nothing in the block raises but the database, and a
    # database error ends the tick anyway; on its own (a live tick) the block is a transaction as before.
    with transaction.atomic(savepoint=False):
        order.save(update_fields=["exchange_order_id", "filled_qty", "avg_price", "fee", "status", "submitted_at",
                                  "updated_at"])
        Fill.objects.bulk_create(fills, ignore_conflicts=True)


def _lookup(ctx: TradingContext, order: Order) -> OrderState | None:
    symbol = ctx.symbol(order.instrument)
    try:
        return call_with_retry(lambda: ctx.exchange.order_by_client_id(symbol, order.client_order_id),
                               description=f"look-up of {order.client_order_id}", sleep=ctx.sleep)
    except ExchangeError as exc:
        raise TickAborted(f"order {order.client_order_id} could not be looked up: {exc}") from exc


def _poll_until_final(ctx: TradingContext, order: Order, state: OrderState | None) -> OrderState | None:
    for attempt in range(ORDER_POLLS):
        if state is not None and not state.is_open:
            return state
        if attempt:
            ctx.sleep(ORDER_POLL_INTERVAL_S)
        state = _lookup(ctx, order)
    return state


def _reject(ctx: TradingContext, order: Order, status: str, reason: str) -> None:
    order.status = status
    order.error = reason[:1000]
    if status == Status.UNKNOWN and order.submitted_at is None:
        order.submitted_at = ctx.now  # the grace before "it never arrived" runs from here
    order.save(update_fields=["status", "error", "submitted_at", "updated_at"])
    ctx.events.append(f"{order.client_order_id}: {reason}")


def _send(ctx: TradingContext, trade: PairTrade, order: Order) -> None:
    """Place a planned order (idempotent by its client id) and record what the exchange did with it."""
    symbol = ctx.symbol(order.instrument)
    ctx.checkpoint(f"before_send:{order.leg}{ACTION_CODES[order.action]}{order.attempt}")
    try:
        ack = call_with_retry(
            lambda: ctx.exchange.place_order(symbol=symbol, side=order.side, qty=order.qty,
                                             client_order_id=order.client_order_id, reduce_only=order.reduce_only),
            description=f"order {order.client_order_id}", sleep=ctx.sleep,
        )
    except DuplicateClientOrderId as exc:
        # The exchange has an order with this id that it could not show us yet: it exists, so it is looked up
        # again next tick, never taken for rejected (that would leave its fill unaccounted for).
        _reject(ctx, order, Status.UNKNOWN, f"{type(exc).__name__}: {exc}")
        return
    except PermanentExchangeError as exc:
        _reject(ctx, order, Status.REJECTED, f"{type(exc).__name__}: {exc}")
        _notify_error(trade, order, exc)
        return
    except TemporaryExchangeError as exc:
        # It may or may not have reached the exchange: the next tick looks it up by its client id.
        _reject(ctx, order, Status.UNKNOWN, f"{type(exc).__name__}: {exc}")
        return
    ctx.checkpoint(f"after_send:{order.leg}{ACTION_CODES[order.action]}{order.attempt}")
    if ack.state is not None and not ack.state.is_open and ack.fills is not None:
        # The exchange answered with the final state and the fills (the paper exchange): no further call to the
        # exchange comes before the write, so the final state is written at once instead of "submitted" first.
        _apply_state(ctx, order, ack.state, ack.fills)
        return
    order.exchange_order_id = ack.exchange_order_id
    order.status = Status.SUBMITTED
    order.submitted_at = ctx.now
    order.save(update_fields=["exchange_order_id", "status", "submitted_at", "updated_at"])
    state = _poll_until_final(ctx, order, ack.state)
    if state is not None and state.is_open:
        state = _cancel(ctx, order, state)  # a market order should not rest: decide on what filled
    if state is not None:
        _apply_state(ctx, order, state)


def _cancel(ctx: TradingContext, order: Order, state: OrderState) -> OrderState:
    symbol = ctx.symbol(order.instrument)
    ctx.checkpoint(f"before_cancel:{order.leg}{ACTION_CODES[order.action]}{order.attempt}")
    try:
        cancelled = call_with_retry(lambda: ctx.exchange.cancel(symbol, order.client_order_id),
                                    description=f"cancel of {order.client_order_id}", sleep=ctx.sleep)
    except ExchangeError as exc:
        raise TickAborted(f"order {order.client_order_id} still works and could not be cancelled: {exc}") from exc
    ctx.events.append(f"{order.client_order_id}: cancelled the unfilled rest of {state.remaining_qty}")
    return cancelled


def _first_leg_halted(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> bool:
    """An open order about to go out while nothing of the trade has filled, under an active halt."""
    if order.action != Order.Action.OPEN or any(o.filled_qty > 0 for o in orders):
        return False
    return ctx.halted is not None and ctx.halted()


def _resolve(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> None:
    """Bring one order that is not final up to date: send it, or look it up."""
    if order.status == Status.PLANNED and order.pk not in ctx.planned_now:
        # Written by an earlier tick that may have died right after sending it.
        state = _lookup(ctx, order)
        if state is not None:
            _apply_found(ctx, order, state)
            return
        planned_at = order.planned_at or trade.state_changed_at
        if planned_at and ctx.now - planned_at > STALE_PLAN:
            _reject(ctx, order, Status.CANCELLED, "never sent, and too old to send now")
            return
        if _first_leg_halted(ctx, trade, order, orders):
            _reject(ctx, order, Status.CANCELLED, "not sent: a halt was raised before the first leg went out")
            return
    if order.status == Status.PLANNED:
        if trade.state == State.PLANNED:
            _set_state(ctx, trade, State.OPENING)
        _send(ctx, trade, order)
        return
    state = _lookup(ctx, order)
    if state is not None:
        _apply_found(ctx, order, state)
    elif order.submitted_at is None or ctx.now - order.submitted_at > NOT_FOUND_GRACE:
        _reject(ctx, order, Status.REJECTED, "the exchange has no order with this client id: it never arrived")


def _apply_found(ctx: TradingContext, order: Order, state: OrderState) -> None:
    state = _poll_until_final(ctx, order, state) or state
    sent = order.submitted_at or order.planned_at
    if state.is_open and (sent is None or ctx.now - sent >= MAX_WORKING):
        state = _cancel(ctx, order, state)
    _apply_state(ctx, order, state)


def _plan_order(ctx: TradingContext, trade: PairTrade, *, leg: str, action: str, side: str, qty: Decimal,
                reduce_only: bool, orders: list[Order]) -> Order:
    attempt = 1 + sum(1 for o in orders if o.leg == leg and o.action == action)
    instrument = trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument
    order = Order.objects.create(
        trade=trade, instrument=instrument, leg=leg, action=action, attempt=attempt, side=side, qty=qty,
        reduce_only=reduce_only, client_order_id=client_order_id(trade, leg, action, attempt), planned_at=ctx.now,
    )
    ctx.planned_now.add(order.pk)
    orders.append(order)
    return order


# ------------------------------------------------------------------------------------------------------ the machine


def advance_trade(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> None:
    """Drive one trade as far as the exchange lets it go in this tick. ``orders`` are the trade's orders."""
    for _ in range(8):  # enough for open -> complete -> unwind within one tick
        ctx.renew_lease()
        if not _resolve_in_flight(ctx, trade, orders):
            return  # something is still working at the exchange, or the first leg decided the outcome
        if trade.state in (State.PLANNED, State.OPENING):
            if not _after_opening(ctx, trade, orders):
                return
        elif trade.state == State.CLOSING:
            if not _drive_close(ctx, trade, orders):
                return
        else:
            return


def _resolve_in_flight(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> bool:
    """Resolve orders not yet final, y before x. True when none is left in flight."""
    for order in sorted(orders, key=lambda o: o.pk):  # the order they were planned in: y open before x open
        if order.status in FINAL_ORDER_STATUSES:
            continue
        if order.action == Order.Action.OPEN and order.leg == Order.Leg.X:
            first = next((o for o in orders if o.action == Order.Action.OPEN and o.leg == Order.Leg.Y), None)
            if first is not None and first.status not in FINAL_ORDER_STATUSES:
                return False  # the y leg is still working
            if first is not None and first.filled_qty == 0 and order.status == Status.PLANNED:
                _reject(ctx, order, Status.CANCELLED, "not sent: the y leg did not fill")
                continue
        _resolve(ctx, trade, order, orders)
        if order.status not in FINAL_ORDER_STATUSES:
            return False
    return True


def _after_opening(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> bool:
    """Decide an opening trade whose orders are all final. True when new orders were placed (go round again)."""
    targets = leg_targets(trade)
    nets = {leg: leg_net(orders, leg) for leg in LEGS}
    if all(nets[leg] == targets[leg] for leg in LEGS):
        _set_state(ctx, trade, State.OPEN, opened_at=ctx.now)
        ctx.events.append(f"trade {trade.pk} open")
        notify(topic="trade_opened", text=_describe(trade, f"opened ({trade.side}, z={_z(trade.entry_zscore)})"))
        return False
    if all(nets[leg] == 0 for leg in LEGS):
        errors = "; ".join(o.error for o in orders if o.error) or "no leg filled"
        _set_state(ctx, trade, State.FAILED, closed_at=ctx.now, error=errors[:2000])
        ctx.events.append(f"trade {trade.pk} failed: {errors}")
        notify(topic="trade_failed", severity=Notification.Severity.WARNING,
               text=_describe(trade, f"failed to open, nothing is held: {errors}"))
        return False
    placed = False
    for leg in LEGS:
        missing = abs(targets[leg]) - abs(nets[leg]) if nets[leg] * targets[leg] >= 0 else abs(targets[leg])
        if missing <= 0:
            continue
        if not _tradable(trade, leg, missing, _leg_price(orders, leg)):
            # The rest is below what the exchange accepts: keep the leg as filled (a tiny hedge mismatch) rather
            # than unwind both legs over it.
            field_name = "y_qty" if leg == Order.Leg.Y else "x_qty"
            note = f"the {leg} leg filled {abs(nets[leg])} of {abs(targets[leg])}; the rest is below the minimum"
            setattr(trade, field_name, abs(nets[leg]))
            trade.error = (trade.error + "\n" + note).strip()[:2000]
            trade.save(update_fields=[field_name, "error", "updated_at"])
            ctx.events.append(f"trade {trade.pk}: {note}")
            placed = True  # go round again: the targets changed
            continue
        if any(o.leg == leg and o.action == Order.Action.COMPLETE for o in orders):
            reason = (f"the {leg} leg holds {abs(nets[leg])} of {abs(targets[leg])} after completing it failed; "
                      "unwinding both legs")
            _set_state(ctx, trade, State.CLOSING, exit_reason=PairTrade.ExitReason.UNWOUND,
                       error=(trade.error + "\n" + reason).strip()[:2000])
            ctx.events.append(f"trade {trade.pk}: {reason}")
            return True
        side = Order.Side.BUY if targets[leg] > 0 else Order.Side.SELL
        order = _plan_order(ctx, trade, leg=leg, action=Order.Action.COMPLETE, side=side, qty=missing,
                            reduce_only=False, orders=orders)
        ctx.checkpoint(f"planned:{order.leg}k{order.attempt}")
        placed = True
    return placed


def _tradable(trade: PairTrade, leg: str, qty: Decimal, price: Decimal | None) -> bool:
    """Would the exchange accept an order of ``qty`` on this leg (step, min qty, min notional at ``price``)?"""
    instrument = trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument
    if instrument.min_qty is not None and qty < instrument.min_qty:
        return False
    if instrument.min_notional is not None and price is not None and qty * price < instrument.min_notional:
        return False
    return instrument.qty_step is None or (qty % instrument.qty_step) == 0


def _leg_price(orders: list[Order], leg: str) -> Decimal | None:
    """The leg's latest fill price: what a completion order would roughly pay."""
    prices = [o.avg_price for o in orders if o.leg == leg and o.avg_price]
    return prices[-1] if prices else None


def start_close(ctx: TradingContext, trade: PairTrade, *, reason: str, zscore: float | None = None) -> None:
    """Mark an open trade to be closed (written before any close order is sent)."""
    _set_state(ctx, trade, State.CLOSING, exit_reason=reason, exit_zscore=zscore)
    ctx.events.append(f"trade {trade.pk} closing: {reason}")
    ctx.checkpoint("closing")


def _drive_close(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> bool:
    """Flatten both legs with reduce-only orders; finish the trade once both are flat. True if orders were placed."""
    unwinding = trade.exit_reason == PairTrade.ExitReason.UNWOUND
    action = Order.Action.UNWIND if unwinding else Order.Action.CLOSE
    placed = False
    for leg in LEGS:
        net = leg_net(orders, leg)
        if net == 0:
            continue
        attempts = sum(1 for o in orders if o.leg == leg and o.action == action)
        if attempts >= MAX_CLOSE_ATTEMPTS:
            _stuck(ctx, trade, leg, net)
            continue
        if any(o.leg == leg and o.pk in ctx.planned_now for o in orders if o.action == action):
            continue  # one attempt per leg and tick: the next tries again a minute later, not a millisecond
        side = Order.Side.SELL if net > 0 else Order.Side.BUY
        order = _plan_order(ctx, trade, leg=leg, action=action, side=side, qty=abs(net), reduce_only=True,
                            orders=orders)
        ctx.checkpoint(f"planned:{order.leg}{ACTION_CODES[action]}{order.attempt}")
        placed = True
    if not placed and all(leg_net(orders, leg) == 0 for leg in LEGS):
        _finish(ctx, trade)
    return placed


def _stuck(ctx: TradingContext, trade: PairTrade, leg: str, net: Decimal) -> None:
    message = (f"trade {trade.pk}: the {leg} leg still holds {net} after {MAX_CLOSE_ATTEMPTS} close orders; "
               "close it by hand on the exchange, then let reconciliation settle the trade")
    if message not in trade.error:
        trade.error = (trade.error + "\n" + message).strip()[:2000]
        trade.save(update_fields=["error", "updated_at"])
        guard_event_record(account=ctx.account, kind="trade_stuck", severity=GuardEvent.Severity.CRITICAL,
                           message=message, details={"trade": trade.pk, "leg": leg, "qty": str(net)})
        notify(topic="trade_stuck", severity=Notification.Severity.CRITICAL, text=message,
               dedupe_key=f"trade_stuck:{trade.pk}:{leg}")
    ctx.events.append(message)


def _finish(ctx: TradingContext, trade: PairTrade) -> None:
    unwound = trade.exit_reason == PairTrade.ExitReason.UNWOUND
    pnl = trade_pnl(trade)
    with transaction.atomic(savepoint=False):  # as in _apply_state: only the database raises in here
        _set_state(ctx, trade, State.UNWOUND if unwound else State.CLOSED, closed_at=ctx.now,
                   realised_pnl=pnl.realised, fees=pnl.fees, funding=pnl.funding)
        verb = "unwound after a failed leg" if unwound else f"closed ({trade.get_exit_reason_display()})"
        notify(topic="trade_unwound" if unwound else "trade_closed",
               severity=Notification.Severity.WARNING if unwound else Notification.Severity.INFO,
               text=_describe(trade, f"{verb}: PnL {pnl.realised:.2f} (fees {pnl.fees:.2f}, "
                                     f"funding {pnl.funding:.2f})"))
    ctx.events.append(f"trade {trade.pk} {trade.state}: {pnl.realised}")


@dataclass(frozen=True)
class TradePnl:
    realised: Decimal
    fees: Decimal
    funding: Decimal


def trade_pnl(trade: PairTrade) -> TradePnl:
    """Both legs' cash flows from the recorded fills, net of fees and funding (a flat trade's PnL)."""
    cash = Decimal(0)
    fees = Decimal(0)
    for side, qty, price, fee in Fill.objects.filter(order__trade=trade).values_list("order__side", "qty", "price",
                                                                                      "fee"):
        cash += qty * price if side == Order.Side.SELL else -qty * price
        fees += fee
    funding = FundingPayment.objects.filter(trade=trade).aggregate(total=Sum("amount"))["total"] or Decimal(0)
    return TradePnl(realised=cash - fees + funding, fees=fees, funding=funding)


def _z(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _describe(trade: PairTrade, what: str) -> str:
    pair = trade.pair
    return f"[{trade.account.name}] {pair.y_instrument.symbol}/{pair.x_instrument.symbol} trade {trade.pk} {what}"


def _notify_error(trade: PairTrade, order: Order, exc: Exception) -> None:
    notify(topic="order_rejected", severity=Notification.Severity.WARNING,
           text=_describe(trade, f"order {order.client_order_id} ({order.leg} {order.action}) rejected: {exc}"),
           dedupe_key=f"order_rejected:{order.client_order_id}")
