"""One tick of one account's bot: the same engine for paper, demo and real accounts, live and in a replay.

A tick, in order:
1. takes (or renews) the account's lease, so that a second bot of the same account does nothing;
2. drives every trade that is in flight (planned, opening, closing) as far as the exchange lets it;
3. reconciles the database with the exchange when the lease is new (a start or a restart) and every
   RECONCILE_EVERY: a bot that can't reconcile trades nothing; a mismatch it can't explain halts openings;
4. records funding settled on the trades' positions;
5. closes open trades that must close (by hand, guard flatten, broken cointegration, level change, exit / stop /
   maximum holding signal);
6. opens trades on fresh entry signals of the account's level, within its halts and limits;
7. writes its heartbeat.
The clock (``now``) and the market (``feed``, ``exchange``) are inputs: nothing here reads the wall clock except
the lease, which is about processes, not markets.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from execution.exchanges.base import TradingExchange
from execution.exchanges.errors import ExchangeError
from execution.exchanges.retry import call_with_retry
from execution.feeds import PriceFeed
from execution.models import BotHeartbeat, ExchangeAccount, FundingPayment, Order, PairTrade, Signal
from execution.services.trades import (
    FINAL_ORDER_STATUSES,
    LEGS,
    TickAborted,
    TradingContext,
    advance_trade,
    client_order_id,
    leg_net,
    start_close,
    trade_pnl,
)
from execution.sizing import LegFilters, size_pair_trade
from notifications.models import Notification
from notifications.services import notify
from pairs.marketdata.funding import funding_interval_minutes, settles_between
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Instrument, Pair, SelectionConfig
from risk.models import GuardEvent, Halt, RiskLimit
from risk.services import guard_event_record, halt_raise, halts_clear

logger = logging.getLogger(__name__)

State = PairTrade.State
Reason = PairTrade.ExitReason
LEASE_TTL = timedelta(seconds=120)
# A lease renewed this recently (by the last tick's heartbeat) is not renewed again at the start of a tick.
LEASE_KEEP_S = 10.0
FUNDING_OVERLAP = timedelta(hours=1)
RECONCILE_EVERY = timedelta(minutes=5)
# An entry signal is acted on only while its bar is the newest closed one (or one bar late, for a slow tick).
MAX_ENTRY_SIGNAL_AGE_BARS = 1
CLOSE_SIGNALS = {
    Signal.Action.EXIT: Reason.EXIT_SIGNAL,
    Signal.Action.STOP: Reason.STOP,
    Signal.Action.MAX_HOLDING: Reason.MAX_HOLDING,
}
ENTRY_SIGNALS = {Signal.Action.ENTER_LONG: PairTrade.Side.LONG_SPREAD, Signal.Action.ENTER_SHORT:
                 PairTrade.Side.SHORT_SPREAD}
_PROCESS_TOKEN = uuid.uuid4().hex[:8]


def default_lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


@dataclass
class TickReport:
    account: str
    now: str
    status: str = "ok"  # ok | locked | disabled | exchange_unreachable | reconcile_failed
    reconciled: bool = False
    mismatches: list[str] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    skipped: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    error: str = ""
    duration_ms: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------------ lease


def lease_acquire(account: ExchangeAccount, owner: str, *, ttl: timedelta = LEASE_TTL) -> str | None:
    """Take or renew the account's lease with one conditional UPDATE. Returns "renewed" (this owner held it),
    "new" (it was free or expired: the caller must reconcile before trading) or None (another live bot has it)."""
    now = timezone.now()
    rows = BotHeartbeat.objects.filter(account=account)
    if rows.filter(lease_owner=owner, lease_expires_at__gt=now).update(lease_expires_at=now + ttl):
        return "renewed"  # the common case: one statement
    try:
        BotHeartbeat.objects.get_or_create(account=account, defaults={"beat_at": now})
    except IntegrityError:  # created by a concurrent bot between the read and the insert
        pass
    if rows.filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)).update(
        lease_owner=owner, lease_expires_at=now + ttl, started_at=now
    ):
        return "new"
    return None


def _lease_for_tick(account: ExchangeAccount, owner: str, *, ttl: timedelta = LEASE_TTL
                    ) -> tuple[str | None, BotHeartbeat | None, float]:
    """The lease as lease_acquire answers it, the account's heartbeat row (None without the lease), and the lease's
    age in seconds (the time since it was last renewed).

    A lease this owner renewed less than ``LEASE_KEEP_S`` ago is kept as it is, with no write: nobody else can take it
    before it expires, a tick starts with nearly the whole TTL still ahead, and the tick renews it during a long run
    as it would have (``TradingContext.renew_lease``, counting the age). A live bot ticking every minute renews as
    before; back-to-back ticks (a replay) read one row instead of writing and reading."""
    now = timezone.now()
    heartbeat = BotHeartbeat.objects.filter(account=account).first()
    if heartbeat is not None and heartbeat.lease_owner == owner and heartbeat.lease_expires_at is not None:
        age = (ttl - (heartbeat.lease_expires_at - now)).total_seconds()
        if 0 <= age < LEASE_KEEP_S:
            return "renewed", heartbeat, age
    lease = lease_acquire(account, owner, ttl=ttl)
    return lease, (BotHeartbeat.objects.get(account=account) if lease is not None else None), 0.0


def lease_release(account: ExchangeAccount, owner: str) -> None:
    BotHeartbeat.objects.filter(account=account, lease_owner=owner).update(lease_expires_at=None)


# ------------------------------------------------------------------------------------------------------------- tick


def bot_tick(
    *, account: ExchangeAccount, exchange: TradingExchange, feed: PriceFeed, now: datetime | None = None,
    config: SelectionConfig | None = None, owner: str | None = None, require_enabled: bool = True,
    checkpoint: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
    task_id: str = "", reconcile_every: timedelta = RECONCILE_EVERY,
) -> TickReport:
    started = time.monotonic()
    now = now or timezone.now()
    owner = owner or default_lease_owner()
    report = TickReport(account=account.name, now=now.isoformat())
    if require_enabled and not account.enabled:
        report.status = "disabled"
        return report
    lease, heartbeat, lease_age = _lease_for_tick(account, owner)
    if lease is None:
        report.status = "locked"
        report.error = "another bot holds this account's lease"
        return report
    config = config or SelectionConfig.current()
    ctx = TradingContext(account=account, exchange=exchange, now=now, config=config, feed=feed, sleep=sleep,
                         checkpoint=checkpoint or (lambda step: None),
                         keep_lease=lambda: lease_acquire(account, owner) is not None,
                         halted=lambda: _active_halts(account).exists(),
                         _lease_renewed=time.monotonic() - lease_age)
    held: list[PairTrade] | None = None  # the tick's trades when it ends normally: the heartbeat counts them
    try:
        held = _tick(ctx, report, heartbeat, fresh_lease=lease == "new", reconcile_every=reconcile_every)
    except TickAborted as exc:
        report.status = "exchange_unreachable"
        report.error = str(exc)
        guard_event_record(account=account, kind="exchange_unreachable", message=str(exc))
    except Exception as exc:
        # The heartbeat must not say "ok" for a tick that crashed; the task fails and the next tick carries on.
        report.status = f"error: {type(exc).__name__}"
        report.error = f"{type(exc).__name__}: {exc}"[:1000]
        raise
    finally:
        report.events.extend(ctx.events)
        report.duration_ms = (time.monotonic() - started) * 1000
        try:
            if held is not None:
                open_trades = sum(1 for t in held if t.state in PairTrade.ACTIVE_STATES)
            else:
                open_trades = PairTrade.objects.filter(account=account, state__in=PairTrade.ACTIVE_STATES).count()
            beat_at = timezone.now()
            BotHeartbeat.objects.filter(account=account, lease_owner=owner).update(
                beat_at=beat_at, worker=owner[:200], task_id=task_id[:64], status=report.status[:200],
                last_tick_ms=report.duration_ms, open_trades=open_trades, lease_expires_at=beat_at + LEASE_TTL,
            )
        except DatabaseError:
            # The database itself failed (the tick's own error is the one worth raising); the next tick beats.
            logger.exception("account %s: heartbeat not written", account.name)
    return report


def _active_trades(account: ExchangeAccount) -> list[PairTrade]:
    """The account's active trades with their pair and both instruments, in one query. Every tick runs this, so it
    loads only what a tick reads: the account is the caller's object, of the entry signal only its bar time is
    needed (``entry_bar_time``), the rule's position of the pair now (``rule_position``, None before its first
    signal) comes along for the close decisions, and the orders are read when first asked for (``_orders_of``)."""
    trades = list(
        PairTrade.objects.filter(account=account, state__in=PairTrade.ACTIVE_STATES)
        .select_related("pair__y_instrument", "pair__x_instrument")
        .annotate(entry_bar_time=F("entry_signal__bar_time"), rule_position=F("pair__signal_state__position"))
        .order_by("pk")
    )
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


def _orders_of(trade: PairTrade) -> list[Order]:
    """The trade's orders (``order_list``), read now together with those of the tick's other trades if not yet."""
    if trade.order_list is None:
        trade.tick_orders.load()
    return trade.order_list


def _active_halts(account: ExchangeAccount):
    return Halt.objects.filter(Q(account=account) | Q(account__isnull=True), cleared_at__isnull=True)


def _tick(ctx: TradingContext, report: TickReport, heartbeat: BotHeartbeat, *, fresh_lease: bool,
          reconcile_every: timedelta) -> list[PairTrade]:
    """Run steps 2-6; returns every trade the tick holds at its end (the lease keeps other bots out, so these are
    all of the account's trades that were active at its start or planned by it)."""
    account = ctx.account
    trades = _active_trades(account)
    # Funding first, while every trade that held a position through a settlement is still active (one closing
    # in this tick takes its funding into its PnL).
    sync_funding(ctx, trades, heartbeat)
    # 2. trades in flight: a restart finishes what the last run started before anything else
    in_flight = [t for t in trades if t.state in (State.PLANNED, State.OPENING, State.CLOSING)]
    for trade in in_flight:
        _advance_isolated(ctx, trade, report)
    trades = [t for t in trades if t.state in PairTrade.ACTIVE_STATES]
    ctx.renew_lease()
    # 3. reconciliation (trades that just traded wait for the next pass: a positions list may lag the fills)
    if fresh_lease or heartbeat.reconciled_at is None or ctx.now - heartbeat.reconciled_at >= reconcile_every:
        try:
            mismatches = reconcile(ctx, trades, just_traded={t.pk for t in in_flight})
        except ExchangeError as exc:
            report.status = "reconcile_failed"
            report.error = f"reconciliation failed, not trading: {exc}"
            guard_event_record(account=account, kind="reconcile_failed", severity=GuardEvent.Severity.CRITICAL,
                               message=report.error)
            notify(topic="reconcile_failed", severity=Notification.Severity.CRITICAL,
                   text=f"[{account.name}] {report.error}",
                   dedupe_key=f"reconcile_failed:{account.pk}:{ctx.now:%Y%m%d%H}")
            return trades
        report.reconciled = True
        report.mismatches = mismatches
        trades = [t for t in trades if t.state in PairTrade.ACTIVE_STATES]
    ctx.renew_lease()
    halts = list(_active_halts(account))
    # 5. closes
    for trade, reason, zscore in close_decisions(ctx, [t for t in trades if t.state == State.OPEN], halts):
        start_close(ctx, trade, reason=reason, zscore=zscore)
        _advance_isolated(ctx, trade, report)
        report.closed += trade.state in PairTrade.FINAL_STATES
    # 6. opens
    if halts:
        report.skipped.append("no new trades: " + "; ".join(h.reason for h in halts)[:500])
        return trades
    active = [t for t in trades if t.state in PairTrade.ACTIVE_STATES]
    ctx.renew_lease()
    planned = open_new_trades(ctx, active, report)
    for trade in planned:
        _advance_isolated(ctx, trade, report)
        report.opened += trade.state == State.OPEN
    return active + planned


def _advance_isolated(ctx: TradingContext, trade: PairTrade, report: TickReport) -> None:
    """Advance one trade; a bug or bad data in one trade must not stop the account's other trades. Exchange
    outages (TickAborted) and database failures stop the tick, as nothing else could succeed either."""
    try:
        advance_trade(ctx, trade, _orders_of(trade))
    except (TickAborted, DatabaseError):
        raise
    except Exception as exc:
        logger.exception("account %s: trade %s failed to advance", ctx.account.name, trade.pk)
        message = f"trade {trade.pk} could not advance: {type(exc).__name__}: {exc}"[:1000]
        report.events.append(message)
        guard_event_record(account=ctx.account, kind="trade_error", severity=GuardEvent.Severity.CRITICAL,
                           message=message, details={"trade": trade.pk})
        notify(topic="trade_error", severity=Notification.Severity.CRITICAL, text=f"[{ctx.account.name}] {message}",
               dedupe_key=f"trade_error:{trade.pk}:{type(exc).__name__}")


# --------------------------------------------------------------------------------------------------- reconciliation


def reconcile(ctx: TradingContext, trades: list[PairTrade], *, just_traded: set[int] = frozenset()) -> list[str]:
    """Compare what the open trades hold with the exchange's positions, symbol by symbol.

    - A trade whose every leg is gone from the exchange (closed by hand, liquidated) is closed here with reason
      ``reconciled`` and a note: its PnL counts only the fills the bot knows of.
    - Every other difference (a position no trade explains, a size that doesn't match) is flagged: a guard event
      and a bot halt stop new trades until a clean reconciliation lifts the halt again.
    - Orders: the bot's own orders in flight are adopted before this runs (advance_trade looks each up by its client
      id); an order still working at the exchange that no active trade is waiting for is cancelled if it is the
      bot's (its client id says so) and flagged either way.
    """
    positions = call_with_retry(lambda: ctx.exchange.positions(), description="positions", sleep=ctx.sleep)
    working = call_with_retry(lambda: ctx.exchange.open_orders(), description="open orders", sleep=ctx.sleep)
    held = {p.symbol: p.qty for p in positions}
    expected: dict[str, Decimal] = {}
    holders: dict[str, list[PairTrade]] = {}
    for trade in trades:
        for leg in LEGS:
            net = leg_net(_orders_of(trade), leg)
            if net:
                symbol = ctx.symbol(_instrument(trade, leg))
                expected[symbol] = expected.get(symbol, Decimal(0)) + net
                holders.setdefault(symbol, []).append(trade)
    gone = []
    for trade in trades:
        symbols = [ctx.symbol(_instrument(trade, leg)) for leg in LEGS if leg_net(_orders_of(trade), leg)]
        if symbols and trade.pk not in just_traded and all(held.get(s, Decimal(0)) == 0 for s in symbols):
            gone.append(trade)
    for trade in gone:
        _close_as_reconciled(ctx, trade)
        for leg in LEGS:
            net = leg_net(_orders_of(trade), leg)
            if net:
                symbol = ctx.symbol(_instrument(trade, leg))
                expected[symbol] -= net
    mismatches = [
        f"{symbol}: exchange holds {held.get(symbol, Decimal(0))}, trades hold {expected.get(symbol, Decimal(0))}"
        for symbol in sorted(set(held) | set(expected))
        if held.get(symbol, Decimal(0)) != expected.get(symbol, Decimal(0))
    ]
    mismatches += _reconcile_orders(ctx, trades, working)
    bot_halts = Halt.objects.filter(account=ctx.account, source=Halt.Source.BOT, cleared_at__isnull=True)
    if mismatches:
        message = "reconciliation mismatch: " + "; ".join(mismatches)
        with transaction.atomic():
            halt_raise(account=ctx.account, source=Halt.Source.BOT, reason=message[:500])
            guard_event_record(account=ctx.account, kind="reconcile_mismatch", severity=GuardEvent.Severity.CRITICAL,
                               message=message, details={"mismatches": mismatches})
            notify(topic="reconcile_mismatch", severity=Notification.Severity.CRITICAL,
                   text=f"[{ctx.account.name}] {message}. New trades are halted until it is resolved.",
                   dedupe_key=f"reconcile_mismatch:{ctx.account.pk}:{hash(tuple(mismatches)) & 0xFFFFFFFF:x}")
    else:
        if bot_halts.exists():
            halts_clear(halts=bot_halts, cleared_by=None)
            guard_event_record(account=ctx.account, kind="reconcile_clean", severity=GuardEvent.Severity.INFO,
                               message="reconciliation is clean again: bot halt lifted")
        BotHeartbeat.objects.filter(account=ctx.account).update(reconciled_at=ctx.now)
    ctx.events.extend(f"mismatch {m}" for m in mismatches)
    return mismatches


def _reconcile_orders(ctx: TradingContext, trades: list[PairTrade], working) -> list[str]:
    """Orders working at the exchange that no active trade is waiting for: the bot's own are cancelled (a trade
    that ended, a database restored from a backup), anyone else's flagged: the bot doesn't own the account alone."""
    awaited = {o.client_order_id for t in trades for o in _orders_of(t)
               if o.status not in FINAL_ORDER_STATUSES}
    ours = f"sa{ctx.account.pk}-"
    problems = []
    for state in working:
        if state.client_order_id in awaited:
            continue
        if state.client_order_id.startswith(ours):
            try:
                call_with_retry(lambda s=state: ctx.exchange.cancel(s.symbol, s.client_order_id),
                                description=f"cancel of stray order {state.client_order_id}", sleep=ctx.sleep)
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


def _instrument(trade: PairTrade, leg: str) -> Instrument:
    return trade.pair.y_instrument if leg == Order.Leg.Y else trade.pair.x_instrument


def _close_as_reconciled(ctx: TradingContext, trade: PairTrade) -> None:
    note = ("both legs were found closed on the exchange (by hand or liquidation); the closing fills were not the "
            "bot's, so its realised PnL is left empty (fees and funding are the bot's records)")
    with transaction.atomic():
        for order in _orders_of(trade):
            if order.status not in FINAL_ORDER_STATUSES:
                order.status = Order.Status.CANCELLED
                order.error = "reconciliation: position gone"
                order.save(update_fields=["status", "error", "updated_at"])
        pnl = trade_pnl(trade)
        trade.state = State.CLOSED
        trade.state_changed_at = ctx.now
        trade.closed_at = ctx.now
        trade.exit_reason = Reason.RECONCILED
        trade.error = (trade.error + "\n" + note).strip()
        trade.fees = pnl.fees
        trade.funding = pnl.funding
        trade.save(update_fields=["state", "state_changed_at", "closed_at", "exit_reason", "error", "fees", "funding",
                                  "updated_at"])
        guard_event_record(account=ctx.account, kind="trade_closed_outside", message=f"trade {trade.pk}: {note}")
        notify(topic="trade_closed_outside", severity=Notification.Severity.WARNING,
               text=f"[{ctx.account.name}] trade {trade.pk} {trade.pair}: {note}")
    ctx.events.append(f"trade {trade.pk} closed by reconciliation")


# ---------------------------------------------------------------------------------------------------------- funding


def sync_funding(ctx: TradingContext, trades: list[PairTrade], heartbeat: BotHeartbeat) -> int:
    """Record funding settled since the last sync, split over the trades holding each symbol by their size."""
    opened = [t.opened_at for t in trades if t.opened_at]
    if not opened:
        return 0  # nothing held: no funding to attribute
    # Funding before the oldest trade opened concerns none of them (and a long idle spell needs no reading).
    since = max(heartbeat.funding_synced_until or min(opened), min(opened) - FUNDING_OVERLAP)
    if since >= ctx.now or not _settlement_between(since, ctx.now, trades):
        return 0
    # Read an hour back again: a settlement the exchange listed late is caught; one already recorded is skipped.
    since = since - FUNDING_OVERLAP
    since_ms, until_ms = int(since.timestamp() * 1000) + 1, int(ctx.now.timestamp() * 1000)
    try:
        payments = call_with_retry(lambda: ctx.exchange.funding_payments(since_ms=since_ms, until_ms=until_ms),
                                   description="funding payments", sleep=ctx.sleep)
    except ExchangeError as exc:
        ctx.events.append(f"funding not synced this tick: {exc}")
        return 0
    by_symbol: dict[str, list[tuple[PairTrade, Instrument, Decimal]]] = {}
    for trade in trades:
        for leg in LEGS:
            net = leg_net(_orders_of(trade), leg)
            if net:
                instrument = _instrument(trade, leg)
                by_symbol.setdefault(ctx.symbol(instrument), []).append((trade, instrument, net))
    # What is recorded already, by the exchange's symbol for this account (the overlap reads it again).
    recorded = set()
    already = FundingPayment.objects.filter(account=ctx.account, settled_at__gte=since)
    for symbol, ccxt_symbol, settled_at in already.values_list("instrument__symbol", "instrument__ccxt_symbol",
                                                               "settled_at"):
        recorded.update({(symbol, settled_at), (ccxt_symbol, settled_at)})
    payments = [p for p in payments if (p.symbol, p.settled_at) not in recorded]
    rows, touched = [], set()
    holders_of = [[h for h in by_symbol.get(p.symbol, []) if h[2] * p.position_qty > 0] for p in payments]
    orphans = {p.symbol for p, holders in zip(payments, holders_of, strict=True) if not holders}
    unknown = _instruments_for_symbols(ctx, orphans)
    for payment, holders in zip(payments, holders_of, strict=True):
        total = sum((abs(net) for _, _, net in holders), Decimal(0))
        if not holders or total == 0:
            instrument = unknown.get(payment.symbol)
            if instrument is not None:
                rows.append(FundingPayment(account=ctx.account, trade=None, instrument=unknown[payment.symbol],
                                           settled_at=payment.settled_at, rate=payment.rate,
                                           position_qty=payment.position_qty, mark_price=payment.mark_price,
                                           amount=payment.amount))
            continue
        for trade, instrument, net in holders:
            share = abs(net) / total
            rows.append(FundingPayment(account=ctx.account, trade=trade, instrument=instrument,
                                       settled_at=payment.settled_at, rate=payment.rate, position_qty=net,
                                       mark_price=payment.mark_price,
                                       amount=(payment.amount * share).quantize(Decimal("1e-12"))))
            touched.add(trade.pk)
    with transaction.atomic():
        FundingPayment.objects.bulk_create(rows, ignore_conflicts=True)
        if touched:
            totals = dict(FundingPayment.objects.filter(trade_id__in=touched).values_list("trade_id")
                          .annotate(total=Sum("amount")).values_list("trade_id", "total"))
            changed = [trade for trade in trades if trade.pk in totals]
            for trade in changed:
                trade.funding = totals[trade.pk]
            PairTrade.objects.bulk_update(changed, ["funding"])  # one statement, not one per trade
        BotHeartbeat.objects.filter(pk=heartbeat.pk).update(funding_synced_until=ctx.now)
    return len(rows)


def _settlement_between(since: datetime, until: datetime, trades: list[PairTrade]) -> bool:
    """Did any held instrument's funding settle in (since, until]? No trade, no funding to attribute."""
    intervals = {funding_interval_minutes(_instrument(t, leg).funding_interval_minutes) for t in trades for leg in LEGS}
    return any(settles_between(since, until, minutes) for minutes in intervals)


def _instruments_for_symbols(ctx: TradingContext, symbols: set[str]) -> dict[str, Instrument | None]:
    """The instruments of exchange symbols no trade holds (funding of a position the bot doesn't know), one query."""
    if not symbols:
        return {}
    found = Instrument.objects.filter(exchange=ctx.account.exchange).filter(Q(symbol__in=symbols)
                                                                            | Q(ccxt_symbol__in=symbols))
    by_symbol = {}
    for instrument in found:
        by_symbol[instrument.symbol] = by_symbol[instrument.ccxt_symbol] = instrument
    return {symbol: by_symbol.get(symbol) for symbol in symbols}


# ----------------------------------------------------------------------------------------------------------- closes


def close_decisions(
    ctx: TradingContext, open_trades: list[PairTrade], halts: list[Halt]
) -> list[tuple[PairTrade, str, float | None]]:
    """Which open trades must close now, and why (first reason that applies, in this order). The trades are
    ``_active_trades``'s: each carries its entry signal's bar time and the rule's position of its pair."""
    if not open_trades:
        return []
    bar = timedelta(milliseconds=timeframe_ms(ctx.config.timeframe))
    newest_closed_bar = ctx.now - bar
    entry_bar = {t.pk: t.entry_bar_time or (t.opened_at or ctx.now) - bar for t in open_trades}
    pair_ids = {t.pair_id for t in open_trades}
    close_signals: dict[int, list[tuple[datetime, str, float]]] = {}
    for pair_id, bar_time, action, zscore in (
        Signal.objects.filter(pair_id__in=pair_ids, timeframe=ctx.config.timeframe, action__in=list(CLOSE_SIGNALS),
                              bar_time__gt=min(entry_bar.values()), bar_time__lte=newest_closed_bar)
        .order_by("bar_time").values_list("pair_id", "bar_time", "action", "zscore")
    ):
        close_signals.setdefault(pair_id, []).append((bar_time, action, zscore))
    flatten = next((h for h in halts if h.flatten), None)
    decisions = []
    for trade in open_trades:
        pair: Pair = trade.pair
        reason, zscore = None, None
        if trade.close_requested_at:
            reason = Reason.MANUAL
        elif flatten is not None:
            reason = Reason.GUARD_HALT
        elif pair.consecutive_failures >= ctx.config.max_consecutive_failures:
            reason = Reason.COINTEGRATION_BROKEN
        elif pair.level_id != ctx.account.level_id or pair.status == Pair.Status.RETIRED:
            reason = Reason.LEVEL_CHANGED
        else:
            signal = next((s for s in close_signals.get(pair.pk, []) if s[0] > entry_bar[trade.pk]), None)
            if signal is not None:
                reason, zscore = CLOSE_SIGNALS[signal[1]], signal[2]
            elif (trade.rule_position or 0) != (1 if trade.side == PairTrade.Side.LONG_SPREAD else -1):
                # The rule is flat (or the other way) without an exit signal the bot saw, e.g. it restarted.
                reason = Reason.EXIT_SIGNAL
        if reason is not None:
            decisions.append((trade, reason, zscore))
    return decisions


# ------------------------------------------------------------------------------------------------------------ opens


def open_new_trades(ctx: TradingContext, active: list[PairTrade], report: TickReport) -> list[PairTrade]:
    """Plan trades for fresh entry signals of the account's level, best |z| first, within the account's limits.

    Each plan is written in one transaction that locks the account row and re-checks halts and limits there, so
    two bots (or a bot and a person raising a halt) can't both pass the checks with stale counts.
    """
    account = ctx.account
    bar = timedelta(milliseconds=timeframe_ms(ctx.config.timeframe))
    newest_closed_bar = ctx.now - bar
    busy_pairs = {t.pair_id for t in active}
    # The fresh entry signals of every pair: a two-bar range of the (bar_time, action) index and nothing else, so no
    # database can start from the pair table and walk each pair's whole signal history (MariaDB does when the read
    # is joined to the pairs). Most bars have none; then this is the only read.
    signals = [
        row for row in Signal.objects.filter(
            timeframe=ctx.config.timeframe, action__in=list(ENTRY_SIGNALS), bar_time__lte=newest_closed_bar,
            bar_time__gt=newest_closed_bar - bar * (MAX_ENTRY_SIGNAL_AGE_BARS + 1),
        ).order_by("-bar_time", "pk").values_list("pk", "pair_id", "action")
        if row[1] not in busy_pairs
    ]
    if not signals:
        return []
    # Of those pairs, the ones this account may open (its level, active, on its exchange), with the rule's position
    # now and the legs: by primary key.
    pairs = {
        pair_id: rest
        for pair_id, *rest in Pair.objects.filter(pk__in={row[1] for row in signals}, level_id=account.level_id,
                                                  status=Pair.Status.ACTIVE, y_instrument__exchange=account.exchange)
        .order_by().values_list("pk", "signal_state__position", "y_instrument_id", "x_instrument_id")
    }
    latest: dict[int, tuple] = {}
    for signal_id, pair_id, action in signals:
        if pair_id in pairs:
            latest.setdefault(pair_id, (signal_id, pair_id, action, *pairs[pair_id]))
    # One trade per instrument at a time: in one-way mode the exchange nets an account's positions per symbol, and
    # only a leg that is alone on its symbol can be closed exactly with reduce-only orders and reconciled.
    held_symbols = {i.pk: i.symbol for t in active for i in (t.pair.y_instrument, t.pair.x_instrument)}
    fresh = []
    for signal_id, pair_id, action, position, y_id, x_id in latest.values():
        if position != (1 if ENTRY_SIGNALS[action] == PairTrade.Side.LONG_SPREAD else -1):
            continue  # the rule has left this position since
        held = [held_symbols[i] for i in (y_id, x_id) if i in held_symbols]
        if held:
            report.skipped.append(f"pair {pair_id}: {' and '.join(held)} already held by another trade of this "
                                  "account")
            continue
        fresh.append(signal_id)
    if not fresh:
        return []
    limits = _limits(account)
    max_trades = min(account.max_concurrent_trades, limits.max_open_trades or account.max_concurrent_trades)
    free = max_trades - len(active)
    if free <= 0:
        report.skipped.append(f"{len(fresh)} entry signal(s): the account already has {len(active)} trades")
        return []
    used = set(PairTrade.objects.filter(account=account, entry_signal_id__in=fresh)
               .values_list("entry_signal_id", flat=True))
    fresh = [signal_id for signal_id in fresh if signal_id not in used]
    if not fresh:
        return []
    busy_instruments = set(held_symbols)  # grows with each trade planned below
    candidates = [(signal, ENTRY_SIGNALS[signal.action]) for signal in
                  Signal.objects.filter(pk__in=fresh).select_related("pair__y_instrument", "pair__x_instrument")]
    candidates.sort(key=lambda c: (-abs(c[0].zscore), c[0].pair_id))
    if not candidates:
        return []
    prices = ctx.feed_closes({i for s, _ in candidates for i in (s.pair.y_instrument_id, s.pair.x_instrument_id)})
    budget = _budget_per_leg(account)
    exposure_cap = account.capital * account.leverage
    if limits.max_gross_exposure is not None:
        exposure_cap = min(exposure_cap, limits.max_gross_exposure)
    planned = []
    for signal, side in candidates[:free]:
        pair = signal.pair
        y_price, x_price = prices.get(pair.y_instrument_id), prices.get(pair.x_instrument_id)
        if y_price is None or x_price is None:
            report.skipped.append(f"{pair}: no recent price for a leg")
            continue
        sizing = size_pair_trade(side=side, hedge_ratio=pair.hedge_ratio, budget_per_leg=budget, y_price=y_price,
                                 x_price=x_price, y_filters=_filters(pair.y_instrument),
                                 x_filters=_filters(pair.x_instrument))
        if not sizing.ok:
            logger.info("account %s: %s not traded: %s", account.name, pair, sizing.reason)
            report.skipped.append(f"{pair}: {sizing.reason}")
            continue
        if {pair.y_instrument_id, pair.x_instrument_id} & busy_instruments:
            report.skipped.append(f"{pair}: a leg is already held by another trade of this account")
            continue
        try:
            _prepare_symbols(ctx, [pair.y_instrument, pair.x_instrument])
        except ExchangeError as exc:
            report.skipped.append(f"{pair}: the exchange can't trade it now: {exc}"[:500])
            continue
        trade = _plan_trade(ctx, signal, side, sizing, max_trades=max_trades, exposure_cap=exposure_cap,
                            report=report)
        if trade is None:
            break
        planned.append(trade)
        busy_instruments |= {pair.y_instrument_id, pair.x_instrument_id}
    return planned


# (account, symbol, leverage) already set up by this process: one-way mode and leverage are set once per symbol.
_prepared: set[tuple[int, str, Decimal]] = set()


def _prepare_symbols(ctx: TradingContext, instruments: list[Instrument]) -> None:
    """Symbols known to the exchange, in one-way mode at the account's leverage, before the first order on them."""
    symbols = [ctx.symbol(i) for i in instruments]  # an instrument the exchange can't name fails here
    todo = [s for s in symbols if (ctx.account.pk, s, ctx.account.leverage) not in _prepared]
    if todo:
        call_with_retry(lambda: ctx.exchange.prepare_account(todo, leverage=ctx.account.leverage),
                        description=f"account set-up for {', '.join(todo)}", sleep=ctx.sleep)
        _prepared.update((ctx.account.pk, s, ctx.account.leverage) for s in todo)


@dataclass(frozen=True)
class _Limits:
    max_open_trades: int | None
    max_gross_exposure: Decimal | None


def _limits(account: ExchangeAccount) -> _Limits:
    """The account's own limits where set, else the system-wide ones."""
    rows = {r.account_id: r for r in RiskLimit.objects.filter(Q(account=account) | Q(account__isnull=True),
                                                               enabled=True)}
    own, default = rows.get(account.pk), rows.get(None)

    def pick(name):
        for row in (own, default):
            if row is not None and getattr(row, name) is not None:
                return getattr(row, name)
        return None

    return _Limits(pick("max_open_trades"), pick("max_gross_exposure"))


def _budget_per_leg(account: ExchangeAccount) -> Decimal:
    """The per-trade budget, scaled by the level's capital weight on levels that trade real capital."""
    level = account.level
    if level.trades_real_capital:
        return account.per_trade_budget * level.capital_weight
    return account.per_trade_budget


def _filters(instrument: Instrument) -> LegFilters:
    return LegFilters(instrument.qty_step, instrument.min_qty, instrument.max_qty, instrument.min_notional)


def _plan_trade(ctx: TradingContext, signal: Signal, side: str, sizing, *, max_trades: int, exposure_cap: Decimal,
                report: TickReport) -> PairTrade | None:
    account = ctx.account
    pair = signal.pair
    # No savepoint inside a caller's transaction (a replay's bar): the block returns, it doesn't raise, on every
    # refusal, and only the insert below, which may collide, needs one.
    with transaction.atomic(savepoint=False):
        ExchangeAccount.objects.select_for_update().filter(pk=account.pk).values_list("pk", flat=True).first()
        halt = _active_halts(account).first()
        if halt is not None:
            report.skipped.append(f"halted while planning: {halt.reason}"[:500])
            return None
        totals = PairTrade.objects.filter(account=account, state__in=PairTrade.ACTIVE_STATES).aggregate(
            exposure=Sum("gross_notional"), count=Count("pk"), this_pair=Count("pk", filter=Q(pair=pair))
        )
        count = totals["count"]
        if count >= max_trades:
            report.skipped.append(f"{pair}: the account has {count} trades (limit {max_trades})")
            return None
        exposure = totals["exposure"] or Decimal(0)
        if exposure + sizing.gross_notional > exposure_cap:
            report.skipped.append(f"{pair}: gross exposure {exposure + sizing.gross_notional:.2f} would exceed "
                                  f"{exposure_cap:.2f}")
            return None
        if totals["this_pair"]:
            return None
        try:
            with transaction.atomic():
                trade = PairTrade.objects.create(
                    account=account, pair=pair, entry_signal=signal, side=side, state=State.PLANNED,
                    state_changed_at=ctx.now, hedge_ratio=pair.hedge_ratio, entry_zscore=signal.zscore,
                    y_qty=sizing.y.qty, x_qty=sizing.x.qty, gross_notional=sizing.gross_notional,
                )
        except IntegrityError:
            return None  # this signal was taken by another run of the account's bot
        orders = [
            Order(trade=trade, instrument=instrument, leg=leg, action=Order.Action.OPEN, attempt=1,
                  side=leg_order.side, qty=leg_order.qty,
                  client_order_id=client_order_id(trade, leg, Order.Action.OPEN, 1))
            for leg, leg_order, instrument in ((Order.Leg.Y, sizing.y, pair.y_instrument),
                                               (Order.Leg.X, sizing.x, pair.x_instrument))
        ]
        _insert_orders(orders)
    ctx.planned_now.update(o.pk for o in orders)
    trade.order_list = orders
    ctx.checkpoint("planned:trade")
    return trade


def _insert_orders(orders: list[Order]) -> None:
    """Insert ``orders`` with their primary keys set: in one statement where the database hands the keys back (MariaDB
    10.5+, SQLite 3.35+), one by one otherwise."""
    if connection.features.can_return_rows_from_bulk_insert:
        Order.objects.bulk_create(orders)
    else:
        for order in orders:
            order.save(force_insert=True)


# ------------------------------------------------------------------------------------------------------- live runs


def account_trading_exchange(account: ExchangeAccount, *, feed: PriceFeed, now: datetime,
                             config: SelectionConfig) -> TradingExchange:
    """The exchange an account trades on: the paper simulator, or Bybit (demo / real) through ccxt."""
    if account.mode == ExchangeAccount.Mode.PAPER:
        from execution.exchanges.paper import paper_exchange_for
        from execution.feeds import SymbolPrices

        return paper_exchange_for(account, price_of=SymbolPrices(feed, exchange=account.exchange),
                                  now=lambda: now, config=config)
    from execution.exchanges.accounts import account_exchange
    from execution.selectors import account_credentials

    return account_exchange(account, account_credentials(account=account))


def bot_tick_live(account: ExchangeAccount, *, task_id: str = "") -> TickReport:
    """A tick at the wall clock, priced from the newest stored candles (what the Celery task runs)."""
    from execution.feeds import StoredCandleFeed

    config = SelectionConfig.current()
    now = timezone.now()
    feed = StoredCandleFeed(timeframe=config.timeframe, now=now)
    exchange = account_trading_exchange(account, feed=feed, now=now, config=config)
    return bot_tick(account=account, exchange=exchange, feed=feed, now=now, config=config, task_id=task_id)
