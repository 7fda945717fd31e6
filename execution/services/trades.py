"""The pair trade's state machine: planned -> opening -> open -> closing -> closed, and failed / unwound.

Rules that keep an account from ever being left with one leg:
- Every order row (with its deterministic client order id) is written before the exchange hears of it, and the
  trade's state is written before every exchange call; a process killed anywhere leaves a record of what may have
  reached the exchange, and the next tick looks each such order up by its client id before doing anything else.
- Orders are placed with the exchange's idempotency key (Bybit orderLinkId), so re-sending after a timeout or a
  crash can't double a position.
- The y leg goes first; the x leg is sent only once the y leg has filled. A leg left short (rejected, partly
  filled) is completed once; if that fails too, both legs are unwound with reduce-only orders. Closes and unwinds
  go out on both legs at once: one leg's unknown answer never holds the other leg's close back.
- A trade is decided on only when none of its orders is in flight: the exchange's fills are the truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from django.db import transaction
from django.db.models import Sum

from core.formatting import cents, plain
from exchanges.errors import ExchangeError
from execution.models import Fill, FundingPayment, Order, PairTrade
from execution.services.context import TickAborted, TradingContext
from execution.services.orders import (
    ACTION_CODES,
    FINAL_ORDER_STATUSES,
    LEGS,
    Status,
    describe,
    leg_net,
    plan_order,
    reject,
    resolve,
    set_state,
    signed,
)
from execution.services.settlement import Settlement, instrument_of, settle_with_exchange
from execution.sizing import leg_sides
from notifications.models import Notification
from notifications.services import notify
from risk.models import GuardEvent, Halt
from risk.services import guard_event_record, halt_raise, halts_clear

logger = logging.getLogger(__name__)

State = PairTrade.State
# Close (or unwind) orders per leg before the trade is declared stuck and handed to a person.
MAX_CLOSE_ATTEMPTS = 5
STUCK_NOTE = "close it by hand"


def leg_targets(trade: PairTrade) -> dict[str, Decimal]:
    y_side, x_side = leg_sides(trade.side, trade.hedge_ratio)
    return {Order.Leg.Y: signed(y_side, trade.y_qty), Order.Leg.X: signed(x_side, trade.x_qty)}


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
    """Resolve orders not yet final, in the order they were planned. True when none is left in flight.

    Only the x leg's opening waits for the y leg's. Every other order goes out whatever the other leg's order is
    doing: a close (or an unwind) of x must not wait while y's close is unknown at the exchange, or a flat y leg
    would leave x held, naked, for as long as y's answer takes."""
    in_flight = False
    for order in sorted(orders, key=lambda o: o.pk):  # the order they were planned in: y open before x open
        if order.status in FINAL_ORDER_STATUSES:
            continue
        if order.action == Order.Action.OPEN and order.leg == Order.Leg.X:
            first = next((o for o in orders if o.action == Order.Action.OPEN and o.leg == Order.Leg.Y), None)
            if first is not None and first.status not in FINAL_ORDER_STATUSES:
                in_flight = True  # the y leg is still working: x waits
                continue
            if first is not None and first.filled_qty == 0 and order.status == Status.PLANNED:
                reject(ctx, order, Status.CANCELLED, "not sent: the y leg did not fill")
                continue
        resolve(ctx, trade, order, orders)
        if order.status not in FINAL_ORDER_STATUSES:
            in_flight = True
    return not in_flight


def _after_opening(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> bool:
    """Decide an opening trade whose orders are all final. True when new orders were placed (go round again)."""
    targets = leg_targets(trade)
    nets = {leg: leg_net(orders, leg) for leg in LEGS}
    if all(nets[leg] == targets[leg] for leg in LEGS):
        with transaction.atomic(savepoint=False):  # the notification commits with the state, under the lease
            # The fees paid so far go with the state (no write of their own): an open trade's row shows its opening
            # fees on every report, not 0 until its close writes them all.
            set_state(ctx, trade, State.OPEN, opened_at=ctx.now,
                      fees=sum((o.fee or Decimal(0) for o in orders), Decimal(0)))
            notify(topic="trade_opened", text=describe(
                trade, f"opened ({trade.side}, z={_z(trade.entry_zscore)}, sizes {trade.pair.y_instrument.symbol} "
                       f"{plain(nets[Order.Leg.Y])}, {trade.pair.x_instrument.symbol} {plain(nets[Order.Leg.X])})"))
        ctx.events.append(f"trade {trade.pk} open")
        return False
    if all(nets[leg] == 0 for leg in LEGS):
        return _nothing_filled(ctx, trade, orders)
    settled = _settled_now(ctx, trade, orders, settlement=True)
    if settled is not None and settled.changed:
        return True  # the exchange's executions changed what the legs hold: decide again on them
    if settled is not None and settled.unexplained:
        ctx.contradicted[trade.pk] = set(settled.unexplained)
        ctx.events.append(f"trade {trade.pk}: the exchange holds {_holdings(settled)}")
    if over := [leg for leg in LEGS if nets[leg] * targets[leg] > 0 and abs(nets[leg]) > abs(targets[leg])]:
        # More than the target (an execution from outside adopted while it opened): no completion can bring it
        # back to a hedge, and an opening trade is never closed by a signal: unwind both legs, nothing stays stuck.
        _start_unwind(ctx, trade, "; ".join(f"the {leg} leg holds {plain(abs(nets[leg]))} of "
                                            f"{plain(abs(targets[leg]))}" for leg in over)
                      + ", more than planned; unwinding both legs")
        return True
    placed = False
    for leg in LEGS:
        outcome = _complete_leg(ctx, trade, orders, leg, targets[leg], nets[leg])
        if outcome == "unwinding":
            return True
        placed = placed or outcome == "placed"
    return placed


def _nothing_filled(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> bool:
    """Neither leg holds anything by the fills: compared with the exchange first when an order went out (one booked
    as not executed may have been, after all: True, decide again), else the trade failed."""
    if any(o.submitted_at is not None or o.status == Status.REJECTED for o in orders) and _settled_now(
            ctx, trade, orders):
        return True
    errors = "; ".join(o.error for o in orders if o.error) or "no leg filled"
    with transaction.atomic(savepoint=False):
        set_state(ctx, trade, State.FAILED, closed_at=ctx.now, error=errors[:2000])
        notify(topic="trade_failed", severity=Notification.Severity.WARNING,
               text=describe(trade, f"failed to open, nothing is held: {errors}"))
    ctx.events.append(f"trade {trade.pk} failed: {errors}")
    return False


def _complete_leg(ctx: TradingContext, trade: PairTrade, orders: list[Order], leg: str, target: Decimal,
                  net: Decimal) -> str:
    """Bring one leg of an opening trade to its target: "placed" (a completion order, or the target lowered to what
    filled), "unwinding" (completing failed before: both legs are unwound), "" (nothing to do now)."""
    missing = abs(target) - abs(net) if net * target >= 0 else abs(target)
    if missing <= 0:
        return ""
    if leg in ctx.contradicted.get(trade.pk, ()):
        # The exchange holds something else on this leg than its fills say, and no execution explains it: a
        # completion sized from the fills could over-fill it. The other leg still completes its hedge; this
        # one waits for the next tick's comparison (the reconciliation halts if it lasts).
        return ""
    if not _tradable(trade, leg, missing, _leg_price(orders, leg)):
        # The rest is below what the exchange accepts: keep the leg as filled (a tiny hedge mismatch) rather
        # than unwind both legs over it.
        field_name = "y_qty" if leg == Order.Leg.Y else "x_qty"
        note = f"the {leg} leg filled {abs(net)} of {abs(target)}; the rest is below the minimum"
        setattr(trade, field_name, abs(net))
        trade.error = (trade.error + "\n" + note).strip()[:2000]
        ctx.save(trade, [field_name, "error", "updated_at"])
        ctx.events.append(f"trade {trade.pk}: {note}")
        return "placed"  # go round again: the targets changed
    if any(o.leg == leg and o.action == Order.Action.COMPLETE for o in orders):
        _start_unwind(ctx, trade, f"the {leg} leg holds {plain(abs(net))} of {plain(abs(target))} after "
                                  "completing it failed; unwinding both legs")
        return "unwinding"
    side = Order.Side.BUY if target > 0 else Order.Side.SELL
    order = plan_order(ctx, trade, leg=leg, action=Order.Action.COMPLETE, side=side, qty=missing, reduce_only=False,
                       orders=orders)
    ctx.checkpoint(f"planned:{order.leg}k{order.attempt}")
    return "placed"


def _start_unwind(ctx: TradingContext, trade: PairTrade, reason: str) -> None:
    """An opening trade that can't become a hedge: both legs are closed with reduce-only orders (exit reason
    ``unwound``), the reason kept on the trade."""
    set_state(ctx, trade, State.CLOSING, exit_reason=PairTrade.ExitReason.UNWOUND,
              error=(trade.error + "\n" + reason).strip()[:2000])
    ctx.events.append(f"trade {trade.pk}: {reason}")


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
    set_state(ctx, trade, State.CLOSING, exit_reason=reason, exit_zscore=zscore)
    ctx.events.append(f"trade {trade.pk} closing: {reason}")
    ctx.checkpoint("closing")


def _drive_close(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> bool:
    """Flatten both legs with reduce-only orders; finish the trade once both are flat. True if orders were placed.

    Before a close is tried again (the last one was refused, or it did not flatten the leg), the legs are compared
    with the exchange: executions no bot order accounts for (a person closed the leg by hand) are adopted, and a
    leg the exchange shows flat is not closed again (a reduce-only order would only be refused)."""
    unwinding = trade.exit_reason == PairTrade.ExitReason.UNWOUND
    action = Order.Action.UNWIND if unwinding else Order.Action.CLOSE
    flat_at_exchange = _flat_at_exchange(ctx, trade, orders, action)
    if flat_at_exchange is None:
        return False  # settled: closed by hand
    flat_at_exchange |= ctx.gone.get(trade.pk, set())
    if flat_at_exchange and all(leg in flat_at_exchange or leg_net(orders, leg) == 0 for leg in LEGS):
        close_as_reconciled(ctx, trade, orders)
        return False
    placed = False
    for leg in LEGS:
        net = leg_net(orders, leg)
        if net != 0 and leg not in flat_at_exchange and _close_leg(ctx, trade, orders, leg, net, action):
            placed = True
    if not placed and all(leg_net(orders, leg) == 0 for leg in LEGS):
        finish_trade(ctx, trade)
    return placed


def _flat_at_exchange(ctx: TradingContext, trade: PairTrade, orders: list[Order], action: str) -> set[str] | None:
    """Before a close is tried again: the legs the exchange shows flat though the trade still holds them, after
    adopting executions; None when the adoption flattened the trade and it was finished (closed by hand)."""
    if not any(o.action == action for o in orders):
        return set()
    outcome = _settled_now(ctx, trade, orders, settlement=True)
    if outcome is None:
        return set()
    if outcome.changed and all(leg_net(orders, leg) == 0 for leg in LEGS):
        finish_trade(ctx, trade, exit_reason=outcome.exit_reason)
        return None
    return {leg for leg, (held, _) in outcome.unexplained.items() if held == 0}


def _close_leg(ctx: TradingContext, trade: PairTrade, orders: list[Order], leg: str, net: Decimal, action: str
               ) -> bool:
    """Plan one reduce-only order for the leg (at most one per leg and tick); hand the trade to a person after
    MAX_CLOSE_ATTEMPTS. True when an order was planned."""
    closes = [o for o in orders if o.leg == leg and o.action == action]
    if len(closes) >= MAX_CLOSE_ATTEMPTS:
        refusal = next((o.error for o in sorted(closes, key=lambda o: o.attempt, reverse=True) if o.error), "")
        _stuck(ctx, trade, leg, net, refusal=refusal)
        return False
    if any(o.leg == leg and o.pk in ctx.planned_now for o in orders if o.action == action):
        return False  # one attempt per leg and tick: the next tries again a minute later, not a millisecond
    side = Order.Side.SELL if net > 0 else Order.Side.BUY
    order = plan_order(ctx, trade, leg=leg, action=action, side=side,
                       qty=reduce_only_qty(instrument_of(trade, leg), abs(net)), reduce_only=True, orders=orders)
    ctx.checkpoint(f"planned:{order.leg}{ACTION_CODES[action]}{order.attempt}")
    return True


def reduce_only_qty(instrument, held: Decimal) -> Decimal:
    """The quantity of a reduce-only order that closes ``held``: what is held, raised to the instrument's quantity
    step and minimum quantity when the exchange changed them after the leg was opened (or a partial close left a
    remainder below them). The exchange refuses an order below its minimum or off its step, whatever it reduces, so
    the leg could never be closed by the bot; a reduce-only market order above the position is cut to it (Bybit, the
    paper exchange), so the larger order closes exactly what is held."""
    qty = held
    step = instrument.qty_step
    if step is not None and step > 0 and qty % step:
        qty = (qty / step).to_integral_value(rounding=ROUND_CEILING) * step
    if instrument.min_qty is not None and qty < instrument.min_qty:
        qty = instrument.min_qty
    return qty


def _settled_now(ctx: TradingContext, trade: PairTrade, orders: list[Order], *, settlement: bool = False):
    """Compare the trade with the exchange once per tick (``settle_with_exchange``). Returns whether executions were
    adopted, or with ``settlement`` the Settlement (None when it was compared already this tick)."""
    if trade.pk in ctx.settled:
        return None if settlement else False
    ctx.settled.add(trade.pk)
    try:
        outcome = settle_with_exchange(ctx, trade, orders)
    except ExchangeError as exc:
        # The exchange can't be read: the tick stops (an outage, not this trade's fault), the next one compares.
        raise TickAborted(f"trade {trade.pk} could not be compared with the exchange: {exc}") from exc
    return outcome if settlement else outcome.changed


def _holdings(settled: Settlement) -> str:
    return ", ".join(f"{leg} {held} (the fills: {net})" for leg, (held, net) in settled.unexplained.items())


def _stuck(ctx: TradingContext, trade: PairTrade, leg: str, net: Decimal, *, refusal: str = "") -> None:
    message = (f"trade {trade.pk}: the {leg} leg still holds {net} after {MAX_CLOSE_ATTEMPTS} close orders; "
               f"{STUCK_NOTE} on the exchange: the next tick settles the trade on the exchange's executions")
    if message not in trade.error:
        trade.error = (trade.error + "\n" + message).strip()[:2000]
        with transaction.atomic(savepoint=False):
            ctx.save(trade, ["error", "updated_at"])
            # No new trade while a leg can't be closed; lifted when the trade settles (finish_trade).
            halt_raise(account=ctx.account, source=Halt.Source.BOT,
                       reason=f"{stuck_halt_prefix(trade)} {message}"[:500])
            guard_event_record(account=ctx.account, kind="trade_stuck", severity=GuardEvent.Severity.CRITICAL,
                               message=message, details={"trade": trade.pk, "leg": leg, "qty": str(net)})
            # The phone's text names the account and the symbol to close by hand, which the trail's message leaves
            # to the trade's row.
            # The exchange's last refusal tells the person what they face: a rule they can act on, or a contract
            # the exchange is settling (no order can close it; its settlement will).
            symbol = (trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument).symbol
            why = f" (the exchange's last refusal: {refusal[:300]})" if refusal else ""
            notify(topic="trade_stuck", severity=Notification.Severity.CRITICAL,
                   text=describe(trade, f"is stuck: the {leg} leg ({symbol}) still holds {plain(net)} after "
                                        f"{MAX_CLOSE_ATTEMPTS} close orders{why}; {STUCK_NOTE} on the exchange: the "
                                        "next tick settles the trade on the exchange's executions"),
                   dedupe_key=f"trade_stuck:{trade.pk}:{leg}")
    ctx.events.append(message)


def stuck_halt_prefix(trade: PairTrade) -> str:
    return f"trade {trade.pk} stuck:"


def _lift_stuck_halt(trade: PairTrade) -> None:
    if STUCK_NOTE not in trade.error:
        return  # never stuck (the common case): no halt of its own to look for
    halts = Halt.objects.filter(account_id=trade.account_id, source=Halt.Source.BOT, cleared_at__isnull=True,
                                reason__startswith=stuck_halt_prefix(trade))
    if halts.exists():
        halts_clear(halts=halts, cleared_by=None)
        guard_event_record(account=trade.account, kind="trade_settled", severity=GuardEvent.Severity.INFO,
                           message=f"trade {trade.pk} settled: its halt is lifted")


def finish_trade(ctx: TradingContext, trade: PairTrade, *, exit_reason: str | None = None) -> None:
    """Both legs are flat: the trade is closed (or unwound) with its PnL from the fills, net of fees and funding.
    ``exit_reason`` replaces the trade's own (a leg closed by hand: ``manual``)."""
    fields = {"exit_reason": exit_reason} if exit_reason else {}
    unwound = trade.exit_reason == PairTrade.ExitReason.UNWOUND and not exit_reason
    pnl = trade_pnl(trade)
    with transaction.atomic(savepoint=False):  # as in _apply_state: only the database raises in here
        set_state(ctx, trade, State.UNWOUND if unwound else State.CLOSED, closed_at=ctx.now,
                  realised_pnl=pnl.realised, fees=pnl.fees, funding=pnl.funding, **fields)
        verb = "unwound after a failed leg" if unwound else f"closed ({trade.get_exit_reason_display()})"
        notify(topic="trade_unwound" if unwound else "trade_closed",
               severity=Notification.Severity.WARNING if unwound else Notification.Severity.INFO,
               text=describe(trade, f"{verb}: PnL {cents(pnl.realised)} (fees {cents(pnl.fees)}, "
                                     f"funding {cents(pnl.funding)})"))
        _lift_stuck_halt(trade)
    ctx.events.append(f"trade {trade.pk} {trade.state}: {pnl.realised}")


def close_as_reconciled(ctx: TradingContext, trade: PairTrade, orders: list[Order]) -> None:
    """The exchange shows both legs flat and no execution explains it (the bot can't see who closed them): the
    trade is closed with exit reason ``reconciled`` and its realised PnL left empty (fees and funding are the bot's
    records)."""
    note = ("both legs were found closed on the exchange and no execution explains it (by hand before the "
            "executions' window, or liquidation); realised PnL is left empty (fees and funding are the bot's records)")
    with transaction.atomic(savepoint=False):
        for order in orders:
            if order.status not in FINAL_ORDER_STATUSES:
                order.status = Order.Status.CANCELLED
                order.error = "reconciliation: position gone"
                ctx.save(order, ["status", "error", "updated_at"])
        pnl = trade_pnl(trade)
        set_state(ctx, trade, State.CLOSED, closed_at=ctx.now, exit_reason=PairTrade.ExitReason.RECONCILED,
                  error=(trade.error + "\n" + note).strip()[:2000], fees=pnl.fees, funding=pnl.funding)
        guard_event_record(account=ctx.account, kind="trade_closed_outside", message=f"trade {trade.pk}: {note}")
        notify(topic="trade_closed_outside", severity=Notification.Severity.WARNING,
               text=f"[{ctx.account.name}] trade {trade.pk} {trade.pair}: {note}")
        _lift_stuck_halt(trade)
    ctx.events.append(f"trade {trade.pk} closed by reconciliation")


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


