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
The clock, the market view and the exchange are inputs (``core.clock``, ``pairs.market``, ``exchanges.base``):
nothing here reads the wall clock except the lease, which is about processes, not markets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from core.clock import Clock, WallClock
from core.market_clock import market_clock
from exchanges.base import TradingExchange
from exchanges.errors import ExchangeError
from exchanges.retry import RetryingExchange
from execution.bot.book import active_trades, orders_of
from execution.bot.entries import entry_lapsed, open_new_trades, pair_off_level
from execution.bot.exits import close_decisions
from execution.bot.funding import funding_after_closes, sync_funding
from execution.bot.guard_watch import configured_guard_max_age, unguarded_refusal
from execution.bot.lease import LEASE_TTL, default_lease_owner, lease_for_tick
from execution.bot.reconcile import reconcile
from execution.models import BotHeartbeat, ExchangeAccount, PairTrade
from execution.services.context import Fence, LeaseLost, TickAborted, TradingContext
from execution.services.trades import advance_trade, start_close
from notifications.models import Notification
from notifications.services import notify
from pairs.market import MarketView, StoredMarket
from pairs.models import StrategyConfig
from risk.models import GuardEvent, Halt
from risk.selectors import account_halts as halts_stopping
from risk.selectors import active_halts
from risk.services import guard_event_record

logger = logging.getLogger(__name__)

State = PairTrade.State
RECONCILE_EVERY = timedelta(minutes=5)


@dataclass
class TickReport:
    account: str
    now: str
    status: str = "ok"  # ok | locked | disabled | refused | exchange_unreachable | reconcile_failed
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


def bot_tick(
    *, account: ExchangeAccount, exchange: TradingExchange, market: MarketView | None = None,
    clock: Clock | None = None, config: StrategyConfig | None = None, owner: str | None = None,
    require_enabled: bool = True, checkpoint: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep, task_id: str = "", reconcile_every: timedelta = RECONCILE_EVERY,
    guard_max_age: timedelta | None = None,
) -> TickReport:
    """One tick of ``account``'s bot at ``clock``'s time (read once: the tick's ``now``), trading on ``exchange``
    (wrapped once in ``RetryingExchange``) and pricing from ``market`` (by default the stored candles at the clock).
    With ``guard_max_age`` no trade is opened when the scheduled guard has not checked the account for that long.
    """
    started = time.monotonic()
    clock = clock or (market.clock if market is not None else WallClock())
    now = clock.now()
    owner = owner or default_lease_owner()
    report = TickReport(account=account.name, now=now.isoformat())
    if refusal := simulated_clock_refusal(account, clock):
        report.status, report.error = "refused", refusal
        return report
    if require_enabled and not account.enabled:
        report.status = "disabled"
        return report
    lease, heartbeat, lease_age = lease_for_tick(account, owner)
    if lease is None:
        report.status = "locked"
        report.error = "another bot holds this account's lease"
        return report
    config = config or StrategyConfig.current()
    market = market or StoredMarket(timeframe=config.timeframe, clock=clock)
    if not isinstance(exchange, RetryingExchange):
        exchange = RetryingExchange(exchange, sleep=sleep)
    ctx = TradingContext(account=account, exchange=exchange, now=now, config=config, market=market, sleep=sleep,
                         checkpoint=checkpoint or (lambda step: None),
                         fence=Fence(account.pk, owner, heartbeat.lease_generation),
                         entry_refusal=_entry_refusal(account, now),
                         entry_lapsed=_entry_lapsed(account, now, config.timeframe), guard_max_age=guard_max_age,
                         _lease_renewed=time.monotonic() - lease_age)
    held: list[PairTrade] | None = None  # the tick's trades when it ends normally: the heartbeat counts them
    try:
        held = _tick(ctx, report, heartbeat, fresh_lease=lease == "new", reconcile_every=reconcile_every)
    except LeaseLost as exc:
        # Another worker took the account over while this one stalled: it stops, writing nothing more.
        report.status = "lease_lost"
        report.error = str(exc)
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
            BotHeartbeat.objects.filter(account=account, lease_owner=owner,
                                        lease_generation=heartbeat.lease_generation).update(
                beat_at=beat_at, worker=owner[:200], task_id=task_id[:64], status=report.status[:200],
                last_tick_ms=report.duration_ms, open_trades=open_trades, lease_expires_at=beat_at + LEASE_TTL,
            )
        except DatabaseError:
            # The database itself failed (the tick's own error is the one worth raising); the next tick beats.
            logger.exception("account %s: heartbeat not written", account.name)
    return report


def _entry_refusal(account: ExchangeAccount, now) -> Callable[[int], str]:
    """The question asked right before a trade's first leg goes out: why it may not, read afresh."""
    def refusal(pair_id: int) -> str:
        if active_halts(account=account, now=now).filter(Q(pair__isnull=True) | Q(pair_id=pair_id)).exists():
            return "a halt was raised before the first leg went out"
        if off_level := pair_off_level(account, pair_id):
            return f"{off_level} before the first leg went out"
        return ""
    return refusal


def _entry_lapsed(account: ExchangeAccount, now, timeframe: str) -> Callable[[PairTrade], str]:
    """The question asked before a stale second leg goes out late: would the trade's entry still be taken now (its
    signal fresh, the rule in the position, no halt, the pair on the account's level)? Why not, read afresh."""
    refusal = _entry_refusal(account, now)

    def lapsed(trade: PairTrade) -> str:
        return entry_lapsed(trade, now=now, timeframe=timeframe) or refusal(trade.pair_id)
    return lapsed


def _tick(ctx: TradingContext, report: TickReport, heartbeat: BotHeartbeat, *, fresh_lease: bool,
          reconcile_every: timedelta) -> list[PairTrade]:
    """Run steps 2-6; returns every trade the tick holds at its end (the lease keeps other bots out, so these are
    all of the account's trades that were active at its start or planned by it). The trades it finished are left to
    the next funding read: their close orders may have filled after a settlement."""
    held = _tick_steps(ctx, report, heartbeat, fresh_lease=fresh_lease, reconcile_every=reconcile_every)
    funding_after_closes(heartbeat, [t for t in held if t.state in PairTrade.FINAL_STATES])
    return held


def _tick_steps(ctx: TradingContext, report: TickReport, heartbeat: BotHeartbeat, *, fresh_lease: bool,
                reconcile_every: timedelta) -> list[PairTrade]:
    trades = active_trades(ctx.account)
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
        if not _reconcile_step(ctx, report, trades, just_traded={t.pk for t in in_flight}):
            return trades
        # A trade reconciliation found one-legged (a leg closed outside the bot) is unwound now, not a tick later.
        advanced = {t.pk for t in in_flight}
        for trade in [t for t in trades if t.state == State.CLOSING and t.pk not in advanced]:
            _advance_isolated(ctx, trade, report)
        trades = [t for t in trades if t.state in PairTrade.ACTIVE_STATES]
    ctx.renew_lease()
    return _close_then_open(ctx, report, trades)


def _close_then_open(ctx: TradingContext, report: TickReport, trades: list[PairTrade]) -> list[PairTrade]:
    """Steps 5 and 6, under the halts in force at the tick's clock."""
    halts = halts_stopping(account_id=ctx.account.pk, now=ctx.now)
    # 5. closes
    for trade, reason, zscore in close_decisions(ctx, [t for t in trades if t.state == State.OPEN], halts):
        start_close(ctx, trade, reason=reason, zscore=zscore)
        _advance_isolated(ctx, trade, report)
        report.closed += trade.state in PairTrade.FINAL_STATES
    # 6. opens (a pause of one pair stops only that pair's entries, checked when planning)
    if account_halts := [h for h in halts if h.pair_id is None]:
        report.skipped.append("no new trades: " + "; ".join(h.reason for h in account_halts)[:500])
        return trades
    if refusal := unguarded_refusal(ctx.account, ctx.guard_max_age, now=ctx.now):
        report.skipped.append(refusal[:500])
        return trades
    return _open_step(ctx, report, [t for t in trades if t.state in PairTrade.ACTIVE_STATES],
                      paused={h.pair_id: h for h in halts if h.pair_id is not None})


def _open_step(ctx: TradingContext, report: TickReport, active: list[PairTrade], *, paused: dict[int, Halt]
               ) -> list[PairTrade]:
    ctx.renew_lease()
    planned = open_new_trades(ctx, active, report, paused=paused)
    for trade in planned:
        _advance_isolated(ctx, trade, report)
        report.opened += trade.state == State.OPEN
    return active + planned


def _reconcile_step(ctx: TradingContext, report: TickReport, trades: list[PairTrade], *, just_traded: set[int]
                    ) -> bool:
    """Reconcile; False (with a critical event and a notification) when the exchange could not be read: a bot that
    can't account for the exchange's positions trades nothing this tick."""
    try:
        report.mismatches = reconcile(ctx, trades, just_traded=just_traded)
    except ExchangeError as exc:
        account = ctx.account
        report.status = "reconcile_failed"
        report.error = f"reconciliation failed, not trading: {exc}"
        # With the exchange's own answer in the traceback (the logging filter masks any secret it echoes).
        logger.warning("account %s: %s", account.name, report.error, exc_info=True)
        guard_event_record(account=account, kind="reconcile_failed", severity=GuardEvent.Severity.CRITICAL,
                           message=report.error)
        notify(topic="reconcile_failed", severity=Notification.Severity.CRITICAL,
               text=f"[{account.name}] {report.error}",
               dedupe_key=f"reconcile_failed:{account.pk}:{ctx.now:%Y%m%d%H}")
        return False
    report.reconciled = True
    return True


def _advance_isolated(ctx: TradingContext, trade: PairTrade, report: TickReport) -> None:
    """Advance one trade; a bug or bad data in one trade must not stop the account's other trades. Exchange
    outages (TickAborted) and database failures stop the tick, as nothing else could succeed either."""
    try:
        advance_trade(ctx, trade, orders_of(trade))
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


def simulated_clock_refusal(account: ExchangeAccount, clock: Clock) -> str:
    """Why ``account`` must not trade at ``clock`` ("" when it may): a demo or real account trades on the
    exchange's market, now, never on a simulated clock (the demo's stored-data clock, ``core.market_clock``)."""
    if not getattr(clock, "simulated", False) or account.mode == ExchangeAccount.Mode.PAPER:
        return ""
    refusal = (f"refused: a {account.mode} account trades only on the wall clock, and this process runs on a "
               f"simulated clock ({clock.now():%Y-%m-%d %H:%M} UTC, STATARB_MARKET_CLOCK=stored)")
    logger.error("account %s: %s", account.name, refusal)
    return refusal


def bot_tick_live(account: ExchangeAccount, *, task_id: str = "") -> TickReport:
    """A tick at the live processes' clock (``core.market_clock``: the wall clock, or the demo's stored-data
    clock), priced from the stored candles up to it (what the Celery task runs)."""
    from execution.venues import account_trading_exchange

    clock = market_clock()
    if refusal := simulated_clock_refusal(account, clock):
        return TickReport(account=account.name, now=clock.now().isoformat(), status="refused", error=refusal)
    config = StrategyConfig.current()
    market = StoredMarket(timeframe=config.timeframe, clock=clock)
    exchange = account_trading_exchange(account, market=market, config=config)
    return bot_tick(account=account, exchange=exchange, market=market, config=config, task_id=task_id,
                    guard_max_age=configured_guard_max_age())
