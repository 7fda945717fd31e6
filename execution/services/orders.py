"""The exchange side of a trade's orders: each order row is written before the exchange hears of it, sent with its
deterministic client order id, looked up by that id whenever an answer leaves its fate open, and brought up to date
from what the exchange reports (its state and its fills: the exchange's executions are the truth).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from django.db import transaction

from exchanges.errors import DuplicateClientOrderId, ExchangeError, Refused
from exchanges.types import FROM_EXECUTIONS, FillState, OrderState
from execution.events import trade_finished
from execution.models import Fill, Order, PairTrade
from execution.services.context import TickAborted, TradingContext
from notifications.models import Notification
from notifications.services import notify
from risk.models import GuardEvent
from risk.services import guard_event_record

logger = logging.getLogger(__name__)

State = PairTrade.State
Status = Order.Status
FINAL_ORDER_STATUSES = frozenset({Status.FILLED, Status.PARTIALLY_FILLED, Status.CANCELLED, Status.REJECTED})
ACTION_CODES = {Order.Action.OPEN: "o", Order.Action.COMPLETE: "k", Order.Action.CLOSE: "c", Order.Action.UNWIND: "u",
                Order.Action.RECONCILE: "r"}
LEGS = (Order.Leg.Y, Order.Leg.X)
# How long a market order may stay open at the exchange before the tick moves on (it is looked up next tick).
ORDER_POLLS = 5
ORDER_POLL_INTERVAL_S = 0.2
# An order the exchange doesn't know this long after it was sent never arrived.
NOT_FOUND_GRACE = timedelta(minutes=2)
# A planned order found unsent (the process died before sending it) is sent late only within this time; after it,
# the market has moved on and the trade is treated as if the order had been rejected. It protects entries: a first
# leg is not sent late. A close or an unwind never goes stale, and a stale second opening leg is decided at once
# (sent while the entry holds, else the filled leg unwound: ``_late_second_leg``).
STALE_PLAN = timedelta(minutes=5)
# Orders found planned and unsent after a restart that are sent whatever their age: reduce-only, they can only take
# a position away, and a resend under the same client id can't execute twice (the exchange refuses the id).
ACTIONS_NEVER_STALE = frozenset({Order.Action.CLOSE, Order.Action.UNWIND})
# An order of unknown outcome still not found this long after it was planned (its executions included) is taken as
# not executed, even one whose id the exchange said was taken: the trade is then decided on the exchange's positions.
UNKNOWN_GIVE_UP = timedelta(minutes=30)
# A market order still working this long after it was sent is cancelled, and the trade decided on what filled.
MAX_WORKING = timedelta(seconds=30)
# Fills lagging the order status are read again this many times before the order is left for the next tick.
FILL_READS = 3
# An order's executions are read from this long before it was created (the exchange's clock, or the row's): without
# a start, Bybit's execution list answers only the last 7 days, and an older order's fills would never show.
FILLS_LOOKBACK = timedelta(hours=1)
# An order whose listed fills stay short of its filled quantity this long after it was sent is reported (a critical
# guard event and notification, once): its trade can't be decided meanwhile, and one leg may be held alone.
FILLS_MISSING_ALERT = timedelta(minutes=5)


# ----------------------------------------------------------------------------------------------------- quantities


def signed(side: str, qty: Decimal) -> Decimal:
    return qty if side == Order.Side.BUY else -qty


def leg_net(orders: list[Order], leg: str) -> Decimal:
    """The position the trade holds in one leg: every fill of every action, signed."""
    return sum((signed(o.side, o.filled_qty) for o in orders if o.leg == leg), Decimal(0))


def client_order_id(trade: PairTrade, leg: str, action: str, attempt: int) -> str:
    """Deterministic and unique: account, trade, the trade's creation second (so a rebuilt database can't reuse an
    id the exchange still remembers), leg, action and attempt. At most 36 characters (Bybit orderLinkId)."""
    created = int(trade.created_at.timestamp())
    cid = f"sa{trade.account_id}-{trade.pk}-{created:x}-{leg}{ACTION_CODES[action]}{attempt}"
    if len(cid) > 36:
        raise ValueError(f"client order id {cid!r} is longer than 36 characters")
    return cid


# ------------------------------------------------------------------------------------------------------ exchange io


def set_state(ctx: TradingContext, trade: PairTrade, state: str, **fields) -> None:
    trade.state = state
    trade.state_changed_at = ctx.now
    for name, value in fields.items():
        setattr(trade, name, value)
    ctx.save(trade, ["state", "state_changed_at", "updated_at", *fields])
    if state in PairTrade.FINAL_STATES:
        # The guard checks the account's limits at once (a loss may cross one), once the result is committed.
        transaction.on_commit(lambda: trade_finished.send(sender=PairTrade, trade=trade, now=ctx.now,
                                                          market=ctx.market))


def _apply_state(ctx: TradingContext, order: Order, state: OrderState,
                 fills_known: tuple[FillState, ...] | None = None) -> None:
    """Copy what the exchange says about an order (and its fills) into the database. ``fills_known``: the order's
    fills as the exchange already gave them (with the order's acknowledgment); they are read when None or short."""
    order.exchange_order_id = state.exchange_order_id or order.exchange_order_id
    order.filled_qty = state.filled_qty
    order.avg_price = state.avg_price
    order.fee = state.fee
    # In our table "partially_filled" always means: ended with part filled. An order still working is "submitted".
    order.status = Status.SUBMITTED if state.is_open or _listing_lags(ctx, order, state) else state.status
    if order.submitted_at is None:
        order.submitted_at = ctx.now
    fills = []
    fills_missing = listed = missing_since = None
    if state.filled_qty > 0:
        symbol = ctx.symbol(order.instrument)
        for attempt in range(FILL_READS):
            if attempt == 0 and fills_known is not None:
                found = list(fills_known)
            else:
                if attempt:
                    ctx.sleep(ORDER_POLL_INTERVAL_S)
                try:
                    found = ctx.exchange.fills_of(symbol, order.client_order_id,
                                                  since_ms=order_fills_since_ms(order, state))
                except ExchangeError as exc:
                    raise TickAborted(f"fills of {order.client_order_id} could not be read: {exc}") from exc
            if sum((f.qty for f in found), Decimal(0)) >= state.filled_qty:
                break
        else:
            # The execution list lags the order: an order isn't final until its fills are all recorded (the PnL
            # is computed from them), so it is read again next tick.
            order.status = Status.SUBMITTED
            listed = sum((f.qty for f in found), Decimal(0))
            ctx.events.append(f"{order.client_order_id}: {state.filled_qty} filled, fewer fills listed yet"
                              f" ({listed})")
            missing_since = order.submitted_at or order.planned_at
            fills_missing = missing_since is not None and ctx.now - missing_since > FILLS_MISSING_ALERT
        fills = [Fill(order=order, exchange_fill_id=f.exec_id, qty=f.qty, price=f.price, fee=f.fee,
                      fee_currency=f.fee_currency, is_maker=f.is_maker, filled_at=f.filled_at) for f in found]
    # No savepoint inside a caller's transaction (a replay's bar): nothing in the block raises but the database, and a
    # database error ends the tick anyway; on its own (a live tick) the block is a transaction as before.
    with transaction.atomic(savepoint=False):
        ctx.save(order, ["exchange_order_id", "filled_qty", "avg_price", "fee", "status", "submitted_at",
                         "updated_at"])
        Fill.objects.bulk_create(fills, ignore_conflicts=True)
        if fills_missing:
            _report_fills_missing(ctx, order, state.filled_qty, listed, since=missing_since)


def order_fills_since_ms(order: Order, state: OrderState | None = None) -> int | None:
    """Where an order's executions are read from: the exchange's creation time of the order when it reported one,
    else when its row was written (the database's clock, as the settlement's executions: the bot's clock may be a
    replay's), less FILLS_LOOKBACK; None (the exchange's default window) only for a row not written yet."""
    if state is not None and state.created_ms:
        return state.created_ms - int(FILLS_LOOKBACK.total_seconds() * 1000)
    if order.created_at is None:
        return None
    return int((order.created_at - FILLS_LOOKBACK).timestamp() * 1000)


def _report_fills_missing(ctx: TradingContext, order: Order, filled: Decimal, listed: Decimal, *, since) -> None:
    """An order the exchange reports filled whose executions stay fewer than that past FILLS_MISSING_ALERT: the
    order stays in flight (its fills make the PnL, and the trade is decided on them), and people are told once
    (a critical guard event with the notification: its trade is held, one leg possibly alone)."""
    message = (f"trade {order.trade_id}: {order.client_order_id} is reported filled {filled}, but its executions "
               f"list only {listed} since {since:%Y-%m-%d %H:%M} UTC; the order stays in flight and its trade "
               "undecided until they show: check the order's executions on the exchange")
    if notify(topic="fills_missing", severity=Notification.Severity.CRITICAL, text=f"[{ctx.account.name}] {message}",
              dedupe_key=f"fills_missing:{order.client_order_id}") is not None:
        guard_event_record(account=ctx.account, kind="fills_missing", severity=GuardEvent.Severity.CRITICAL,
                           message=message, details={"trade": order.trade_id, "order": order.client_order_id,
                                                     "filled": str(filled), "listed": str(listed)})


def order_refresh(ctx: TradingContext, order: Order, state: OrderState) -> None:
    """Bring an order's row (and its fills) up to date with what the exchange reports of it, whatever it was
    booked as: the exchange's executions are the truth (settlement, when they show more than the row holds)."""
    _apply_state(ctx, order, state)


def _listing_lags(ctx: TradingContext, order: Order, state: OrderState) -> bool:
    """An order the exchange shows only through executions that fill part of it: its order lists don't show it
    yet, and more executions may follow. Kept in flight for the grace (a completion now could over-fill the leg);
    after it, the executions are what it did."""
    return (state.raw_status == FROM_EXECUTIONS and state.filled_qty < order.qty
            and (order.submitted_at is None or ctx.now - order.submitted_at <= NOT_FOUND_GRACE))


def _lookup(ctx: TradingContext, order: Order) -> OrderState | None:
    symbol = ctx.symbol(order.instrument)
    try:
        return ctx.exchange.order_by_client_id(symbol, order.client_order_id, since_ms=order_fills_since_ms(order))
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


def reject(ctx: TradingContext, order: Order, status: str, reason: str) -> None:
    order.status = status
    order.error = reason[:1000]
    if status == Status.UNKNOWN and order.submitted_at is None:
        order.submitted_at = ctx.now  # the grace before "it never arrived" runs from here
    ctx.save(order, ["status", "error", "submitted_at", "updated_at"])
    ctx.events.append(f"{order.client_order_id}: {reason}")


def _send(ctx: TradingContext, trade: PairTrade, order: Order) -> None:
    """Place a planned order (idempotent by its client id) and record what the exchange did with it."""
    symbol = ctx.symbol(order.instrument)
    # An unknown order, or one an earlier tick planned (its process may have sent it before it stopped): a refusal
    # now proves only that this send did nothing.
    resending = order.status == Status.UNKNOWN or order.pk not in ctx.planned_now
    ctx.checkpoint(f"before_send:{order.leg}{ACTION_CODES[order.action]}{order.attempt}")
    ctx.renew_lease(now=True)  # only the lease holder sends: a worker that lost it stops here
    try:
        # Its retries (the same id after a temporary error) are sends too: each renews the lease first.
        ack = ctx.exchange.place_order(symbol=symbol, side=order.side, qty=order.qty,
                                       client_order_id=order.client_order_id, reduce_only=order.reduce_only,
                                       before_retry=lambda: ctx.renew_lease(now=True))
    except Refused as exc:
        if resending:
            # The refusal proves only that this resend did nothing: the first send may have executed.
            order.submitted_at = ctx.now
            reject(ctx, order, Status.UNKNOWN, f"{type(exc).__name__} on a resend, the first send's outcome still "
                                               f"unknown: {exc}")
            return
        # The exchange said it did nothing with the order: the one answer that books it as rejected.
        with transaction.atomic(savepoint=False):
            reject(ctx, order, Status.REJECTED, f"{type(exc).__name__}: {exc}")
            _notify_error(trade, order, exc)
        return
    except ExchangeError as exc:
        # Anything else (a duplicate id it can't show yet, 10016, a 5xx page, a timeout, a dropped connection) may
        # have been executed: the order stays unknown and is looked up by its client id before anything is decided.
        # Its grace before "never arrived" runs from this send, the last.
        order.submitted_at = ctx.now
        reject(ctx, order, Status.UNKNOWN, _unknown_error(order, exc))
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
    ctx.save(order, ["exchange_order_id", "status", "submitted_at", "updated_at"])
    state = _poll_until_final(ctx, order, ack.state)
    if state is not None and state.is_open:
        state = _cancel(ctx, order, state)  # a market order should not rest: decide on what filled
    if state is not None:
        _apply_state(ctx, order, state)


def _unknown_error(order: Order, exc: ExchangeError) -> str:
    """The error an unknown order keeps: this send's, after the exchange's word that its id is taken when an earlier
    send had it (that word is what keeps the order from being given up early, ``_unknown_not_found``)."""
    error = f"{type(exc).__name__}: {exc}"
    taken = DuplicateClientOrderId.__name__
    if order.error.startswith(taken) and not error.startswith(taken):
        return f"{order.error.splitlines()[0]}\nthen {error}"
    return error


def _cancel(ctx: TradingContext, order: Order, state: OrderState) -> OrderState:
    symbol = ctx.symbol(order.instrument)
    ctx.checkpoint(f"before_cancel:{order.leg}{ACTION_CODES[order.action]}{order.attempt}")
    try:
        cancelled = ctx.exchange.cancel(symbol, order.client_order_id)
    except ExchangeError as exc:
        raise TickAborted(f"order {order.client_order_id} still works and could not be cancelled: {exc}") from exc
    ctx.events.append(f"{order.client_order_id}: cancelled the unfilled rest of {state.remaining_qty}")
    return cancelled


def _first_leg_refusal(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> str:
    """Why an open order about to go out while nothing of the trade has filled may not (an active halt, the pair
    off the account's level); "" when it may, or when a leg has filled (the trade is then completed or unwound)."""
    if order.action != Order.Action.OPEN or any(o.filled_qty > 0 for o in orders) or ctx.entry_refusal is None:
        return ""
    return ctx.entry_refusal(trade.pair_id)


def resolve(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> None:
    """Bring one order that is not final up to date: send it, or look it up. An order whose outcome is unknown is
    looked up by its client id (open orders, history, executions); not found, it is sent again under the same id
    while its decision still holds (the exchange can't execute one id twice), and given up as not executed after."""
    if order.status == Status.PLANNED and order.pk not in ctx.planned_now:
        # Written by an earlier tick that may have died right after sending it.
        state = _lookup(ctx, order)
        if state is not None:
            _apply_found(ctx, order, state)
            return
        late = _late_second_leg(ctx, trade, order, orders)
        if late == "unwound":
            return
        if order.action in ACTIONS_NEVER_STALE or late == "send":
            refusal = ""  # sent now, under its id: see ACTIONS_NEVER_STALE and _late_second_leg
        else:
            refusal = _not_sendable(ctx, trade, order, orders)
        if refusal:
            # Not found may be the exchange's lists lagging a send the dead process made: not sent again, and
            # given up only once it stays unfound for the grace (the unknown order's rule below).
            order.submitted_at = ctx.now
            reject(ctx, order, Status.UNKNOWN, f"not sent again ({refusal}); it may have gone out before the "
                                               "process that planned it stopped: looked up until the grace passes")
            return
    if order.status == Status.PLANNED:
        if order.pk in ctx.planned_now and (refusal := _first_leg_refusal(ctx, trade, order, orders)):
            # Planned this tick, before a halt (or a level change) that landed while earlier trades were filling.
            reject(ctx, order, Status.CANCELLED, f"never sent: {refusal}")
            return
        if trade.state == State.PLANNED:
            set_state(ctx, trade, State.OPENING)
        _send(ctx, trade, order)
        return
    state = _lookup(ctx, order)
    if state is not None:
        _apply_found(ctx, order, state)
    elif order.status == Status.UNKNOWN:
        _unknown_not_found(ctx, trade, order, orders)
    elif order.submitted_at is None or ctx.now - order.submitted_at > NOT_FOUND_GRACE:
        reject(ctx, order, Status.CANCELLED, "acknowledged, but the exchange has not shown it (open orders, "
                                             f"history, executions) for {NOT_FOUND_GRACE}: taken as not executed")


def _unknown_not_found(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> None:
    """An order of unknown outcome that the exchange doesn't show (open orders, history, executions). Sent again
    under the same id while its decision holds: the exchange can't execute one id twice, so that either places it
    or proves it exists. Otherwise given up as not executed only after it stays unfound for the grace since its
    last send (the exchange's lists lag), and never once the exchange has said its id is taken."""
    refusal = _not_sendable(ctx, trade, order, orders)
    if not refusal:
        ctx.events.append(f"{order.client_order_id}: not found at the exchange; sent again under the same id")
        _send(ctx, trade, order)
        return
    planned_at = order.planned_at or trade.state_changed_at
    if planned_at is not None and ctx.now - planned_at > UNKNOWN_GIVE_UP:
        _give_up_unknown(ctx, trade, order)
        return
    if order.error.startswith(DuplicateClientOrderId.__name__):
        ctx.events.append(f"{order.client_order_id}: the exchange said its id is taken but doesn't show it yet; "
                          "kept unknown and looked up again")
        return
    if order.submitted_at is not None and ctx.now - order.submitted_at <= NOT_FOUND_GRACE:
        ctx.events.append(f"{order.client_order_id}: not found yet; not sent again ({refusal}), looked up again")
        return
    reject(ctx, order, Status.CANCELLED, "not executed: the exchange shows no order, history or execution under "
                                         f"its client id for {NOT_FOUND_GRACE}, and it is not sent again ({refusal})")


def _give_up_unknown(ctx: TradingContext, trade: PairTrade, order: Order) -> None:
    """An order still unfound (open orders, history and its executions, by client id) long after it was planned,
    even one whose id the exchange said was taken: whatever it was, nothing of it executed in that time, so it is
    taken as not executed and the trade decided on its legs (compared with the exchange's positions), rather than
    held in flight for good. People are told: an exchange that says an id is taken and never shows it is wrong."""
    message = (f"trade {trade.pk}: {order.client_order_id} still not found at the exchange {UNKNOWN_GIVE_UP} after "
               f"it was planned ({order.error.splitlines()[0][:200] if order.error else 'no answer'}); taken as not "
               "executed, the trade is decided on what the exchange holds")
    with transaction.atomic(savepoint=False):
        reject(ctx, order, Status.CANCELLED, message)
        guard_event_record(account=ctx.account, kind="order_unresolved", severity=GuardEvent.Severity.CRITICAL,
                           message=message, details={"trade": trade.pk, "order": order.client_order_id})
        notify(topic="order_unresolved", severity=Notification.Severity.CRITICAL,
               text=f"[{ctx.account.name}] {message}", dedupe_key=f"order_unresolved:{order.client_order_id}")


def _stale(ctx: TradingContext, trade: PairTrade, order: Order) -> bool:
    planned_at = order.planned_at or trade.state_changed_at
    return planned_at is not None and ctx.now - planned_at > STALE_PLAN


def _late_second_leg(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> str:
    """A stale plan of a second opening leg (an open or a completion while a leg of the trade has filled), found
    unsent after a restart (not found by its client id, its executions included): decided at once rather than held
    for the grace while the filled leg is alone. Its entry still holding (the signal fresh, the rule still in the
    position, no halt or level change): "send" (it goes out now, under its id, which the exchange can't execute
    twice). Otherwise "unwound": it is not sent and the trade unwinds its filled leg. "" for any other order.

    Not found more than STALE_PLAN after it was planned, a send the stopped process made would show by now (its
    lease had to expire first); should it show later all the same, the trade's settlement adopts its executions, or
    the reconciliation flags the position. STALE_PLAN keeps its protection where it was meant: a first leg planned
    before the market moved on is not sent late. A close or an unwind never goes stale (ACTIONS_NEVER_STALE)."""
    if (order.action not in (Order.Action.OPEN, Order.Action.COMPLETE) or not any(o.filled_qty > 0 for o in orders)
            or not _stale(ctx, trade, order)):
        return ""
    lapsed = ctx.entry_lapsed(trade) if ctx.entry_lapsed is not None else ""
    if not lapsed:
        ctx.events.append(f"{order.client_order_id}: planned more than {STALE_PLAN} ago and not found at the "
                          "exchange; the entry still holds: sent now")
        return "send"
    reason = (f"the {order.leg} leg's {order.action} planned more than {STALE_PLAN} ago was not found at the exchange "
              f"and is not sent ({lapsed}): unwinding the filled leg")
    with transaction.atomic(savepoint=False):
        reject(ctx, order, Status.CANCELLED, f"never sent: {reason}")
        set_state(ctx, trade, State.CLOSING, exit_reason=PairTrade.ExitReason.UNWOUND,
                  error=(trade.error + "\n" + reason).strip()[:2000])
    ctx.events.append(f"trade {trade.pk}: {reason}")
    return "unwound"


def _not_sendable(ctx: TradingContext, trade: PairTrade, order: Order, orders: list[Order]) -> str:
    """Why an order decided earlier may not go out now ("" when it may): the market has moved on since it was
    planned, or a halt or a level change stands before the first leg of a trade."""
    if _stale(ctx, trade, order):
        return f"planned more than {STALE_PLAN} ago"
    return _first_leg_refusal(ctx, trade, order, orders)


def _apply_found(ctx: TradingContext, order: Order, state: OrderState) -> None:
    state = _poll_until_final(ctx, order, state) or state
    sent = order.submitted_at or order.planned_at
    if state.is_open and (sent is None or ctx.now - sent >= MAX_WORKING):
        state = _cancel(ctx, order, state)
    _apply_state(ctx, order, state)


def plan_order(ctx: TradingContext, trade: PairTrade, *, leg: str, action: str, side: str, qty: Decimal,
                reduce_only: bool, orders: list[Order]) -> Order:
    attempt = 1 + sum(1 for o in orders if o.leg == leg and o.action == action)
    instrument = trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument
    with transaction.atomic(savepoint=False):
        ctx.hold_lease()
        order = Order.objects.create(
            trade=trade, instrument=instrument, leg=leg, action=action, attempt=attempt, side=side, qty=qty,
            reduce_only=reduce_only, client_order_id=client_order_id(trade, leg, action, attempt),
            planned_at=ctx.now, reference_price=ctx.closes({instrument.pk}).get(instrument.pk),
        )
    ctx.planned_now.add(order.pk)
    orders.append(order)
    return order




def _notify_error(trade: PairTrade, order: Order, exc: Exception) -> None:
    notify(topic="order_rejected", severity=Notification.Severity.WARNING,
           text=describe(trade, f"order {order.client_order_id} ({order.leg} {order.action}) rejected: {exc}"),
           dedupe_key=f"order_rejected:{order.client_order_id}")


def describe(trade: PairTrade, what: str) -> str:
    pair = trade.pair
    return f"[{trade.account.name}] {pair.y_instrument.symbol}/{pair.x_instrument.symbol} trade {trade.pk} {what}"
