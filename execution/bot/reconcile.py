"""Reconciliation: the database's trades compared with the exchange's positions and working orders.

A bot that can't reconcile trades nothing; a difference it can't explain halts new trades until a clean pass lifts
the halt again.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from django.db import transaction

from exchanges.errors import ExchangeError
from execution.bot.book import instrument_of, orders_of
from execution.models import BotHeartbeat, PairTrade
from execution.services.context import TradingContext
from execution.services.orders import FINAL_ORDER_STATUSES, LEGS, leg_net
from execution.services.settlement import settle_with_exchange
from execution.services.trades import close_as_reconciled, finish_trade, start_close
from notifications.models import Notification
from notifications.services import notify
from risk.models import GuardEvent, Halt
from risk.services import guard_event_record, halt_raise, halts_clear

State = PairTrade.State
Reason = PairTrade.ExitReason
MISMATCH = "reconciliation mismatch: "


def reconcile(ctx: TradingContext, trades: list[PairTrade], *, just_traded: set[int] = frozenset()) -> list[str]:
    """Compare what the open trades hold with the exchange's positions, symbol by symbol.

    - An open trade whose legs differ from the exchange is settled against the exchange's executions
      (``execution.services.settlement``): executions no bot order accounts for (a person closed or opened a leg by
      hand) are adopted as fills; a trade that is flat then is closed, exit reason ``manual`` (``exchange`` when
      those executions were all the exchange's own: liquidation, auto-deleveraging, delivery); one left with one
      leg is unwound. A trade whose legs are all gone with no execution to explain it is closed ``reconciled``,
      its realised PnL left empty; one whose leg is gone with nothing to explain it while the other is held is
      unwound. A leg is taken for gone only when a second read of its position says so too.
    - Every other difference (a position no trade explains, a size that doesn't match) is flagged: a guard event
      and a bot halt stop new trades until a clean reconciliation lifts the halt again.
    - Trades that traded in this tick wait for the next pass (a positions list may lag the fills); trades in flight
      are settled by the state machine itself before it sends another order.
    - Orders: the bot's own orders in flight are adopted before this runs (advance_trade looks each up by its client
      id); an order still working at the exchange that no active trade is waiting for is cancelled if it is the
      bot's (its client id says so) and flagged either way.
    """
    positions = ctx.exchange.positions()
    working = ctx.exchange.open_orders()
    held = {p.symbol: p.qty for p in positions}
    for trade in trades:
        if trade.state == State.OPEN and trade.pk not in just_traded:
            _settle_open_trade(ctx, trade, held)
    expected: dict[str, Decimal] = {}
    for trade in trades:
        if trade.state not in PairTrade.ACTIVE_STATES:
            continue
        for leg in LEGS:
            net = leg_net(orders_of(trade), leg)
            if net:
                symbol = ctx.symbol(instrument_of(trade, leg))
                expected[symbol] = expected.get(symbol, Decimal(0)) + net
    mismatches = [
        f"{symbol}: exchange holds {held.get(symbol, Decimal(0))}, trades hold {expected.get(symbol, Decimal(0))}"
        for symbol in sorted(set(held) | set(expected))
        if held.get(symbol, Decimal(0)) != expected.get(symbol, Decimal(0))
    ]
    mismatches += _reconcile_orders(ctx, trades, working)
    # Only the halts reconciliation raised are lifted by a clean pass (a stuck trade's halt waits for that trade).
    bot_halts = Halt.objects.filter(account=ctx.account, source=Halt.Source.BOT, cleared_at__isnull=True,
                                    reason__startswith=MISMATCH)
    if mismatches:
        message = MISMATCH + "; ".join(mismatches)
        with transaction.atomic():
            halt_raise(account=ctx.account, source=Halt.Source.BOT, reason=message[:500])
            guard_event_record(account=ctx.account, kind="reconcile_mismatch", severity=GuardEvent.Severity.CRITICAL,
                               message=message, details={"mismatches": mismatches})
            notify(topic="reconcile_mismatch", severity=Notification.Severity.CRITICAL,
                   text=f"[{ctx.account.name}] {message}. New trades are halted until it is resolved.",
                   dedupe_key=mismatch_dedupe_key(ctx.account.pk, mismatches))
    else:
        if bot_halts.exists():
            halts_clear(halts=bot_halts, cleared_by=None)
            guard_event_record(account=ctx.account, kind="reconcile_clean", severity=GuardEvent.Severity.INFO,
                               message="reconciliation is clean again: bot halt lifted")
        BotHeartbeat.objects.filter(account=ctx.account).update(reconciled_at=ctx.now)
    ctx.events.extend(f"mismatch {m}" for m in mismatches)
    return mismatches


def mismatch_dedupe_key(account_id: int, mismatches: list[str]) -> str:
    """One message per account and set of mismatches, in every process: ``hash()`` of strings differs from one
    process to the next (PYTHONHASHSEED), so each restart of the account's worker sent the standing mismatch's
    critical alert again."""
    digest = hashlib.sha256("\n".join(mismatches).encode()).hexdigest()[:16]
    return f"reconcile_mismatch:{account_id}:{digest}"


def _reconcile_orders(ctx: TradingContext, trades: list[PairTrade], working) -> list[str]:
    """Orders working at the exchange that no active trade is waiting for: the bot's own are cancelled (a trade
    that ended, a database restored from a backup), anyone else's flagged: the bot doesn't own the account alone."""
    awaited = {o.client_order_id for t in trades for o in orders_of(t)
               if o.status not in FINAL_ORDER_STATUSES}
    ours = f"sa{ctx.account.pk}-"
    problems = []
    for state in working:
        if state.client_order_id in awaited:
            continue
        if state.client_order_id.startswith(ours):
            try:
                ctx.exchange.cancel(state.symbol, state.client_order_id)
                ctx.events.append(f"cancelled stray order {state.client_order_id} ({state.symbol})")
                guard_event_record(account=ctx.account, kind="stray_order_cancelled",
                                   message=f"order {state.client_order_id} on {state.symbol} was working with no "
                                           "trade waiting for it: cancelled")
                continue
            except ExchangeError as exc:
                problems.append(f"order {state.client_order_id} on {state.symbol}: could not cancel it ({exc})")
                continue
        problems.append(f"order {state.client_order_id or state.exchange_order_id} on {state.symbol} "
                        f"({state.side} {state.remaining_qty}) is working and is not the bot's")
    return problems


def _unwind_one_legged(ctx: TradingContext, trade: PairTrade, orders, *, vanished: str | None = None) -> None:
    """One leg was closed outside the bot (by hand, a liquidation, auto-deleveraging, a delisting's settlement) and
    the other is still held: the pair is no longer a hedge, so the rest is closed now (exit reason ``unwound``),
    whatever halt stands: holding one leg alone is the risk a halt is there to stop. ``vanished``: the leg the
    exchange shows flat (twice) with no execution to explain it; its close order is refused (reduce-only on
    nothing) and the trade then ends ``reconciled``."""
    if vanished is None:
        gone = [leg for leg in LEGS if leg_net(orders, leg) == 0]
        message = (f"trade {trade.pk}: the {' and '.join(gone)} leg was closed outside the bot (the exchange's "
                   "executions); the other leg is closed now")
    else:
        gone = [vanished]
        ctx.gone.setdefault(trade.pk, set()).add(vanished)  # a reduce-only close of nothing would only be refused
        message = (f"trade {trade.pk}: the exchange shows the {vanished} leg flat (read twice) and no execution "
                   "explains it; the other leg is closed now")
    with transaction.atomic(savepoint=False):
        start_close(ctx, trade, reason=Reason.UNWOUND)
        guard_event_record(account=ctx.account, kind="leg_closed_outside", severity=GuardEvent.Severity.WARNING,
                           message=message, details={"trade": trade.pk, "legs": gone})
        notify(topic="leg_closed_outside", severity=Notification.Severity.WARNING,
               text=f"[{ctx.account.name}] {message}", dedupe_key=f"leg_closed_outside:{trade.pk}")


def _settle_open_trade(ctx: TradingContext, trade: PairTrade, held: dict[str, Decimal]) -> None:
    orders = orders_of(trade)
    if any(o.status not in FINAL_ORDER_STATUSES for o in orders):
        return
    outcome = settle_with_exchange(ctx, trade, orders, held=held)
    ctx.settled.add(trade.pk)
    flat = all(leg_net(orders, leg) == 0 for leg in LEGS)
    if outcome.changed and flat:
        finish_trade(ctx, trade, exit_reason=outcome.exit_reason)
    elif outcome.changed and any(leg_net(orders, leg) == 0 for leg in LEGS):
        _unwind_one_legged(ctx, trade, orders)
    elif outcome.unexplained and all(exchange == 0 for exchange, _ in outcome.unexplained.values()) and all(
        leg in outcome.unexplained or leg_net(orders, leg) == 0 for leg in LEGS
    ):
        close_as_reconciled(ctx, trade, orders)
    elif (vanished := _vanished_leg(orders, outcome.unexplained)) is not None:
        _unwind_one_legged(ctx, trade, orders, vanished=vanished)


def _vanished_leg(orders, unexplained: dict[str, tuple[Decimal, Decimal]]) -> str | None:
    """The leg the exchange shows flat with nothing to explain it while the other leg is held just as the fills
    say (any other difference is a mismatch for a person: nothing is sent on a guess)."""
    flat = [leg for leg, (exchange, _) in unexplained.items() if exchange == 0]
    if len(flat) != 1 or len(unexplained) != 1:
        return None
    other = next(leg for leg in LEGS if leg != flat[0])
    return flat[0] if leg_net(orders, other) != 0 else None
