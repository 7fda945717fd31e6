"""Opening trades on fresh entry signals of the account's level, within its halts and limits."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q, Sum

from core.statements import CompiledRead
from exchanges.errors import ExchangeError
from execution.account_checks import level_refusal
from execution.locks import lock_account
from execution.models import ExchangeAccount, Order, PairTrade, Signal
from execution.services.context import TradingContext
from execution.services.orders import client_order_id
from execution.sizing import LegFilters, size_pair_trade
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Instrument, Pair
from risk.models import Halt
from risk.selectors import active_halts, entry_blocked_by, limits_for

if TYPE_CHECKING:
    from execution.bot.tick import TickReport

logger = logging.getLogger(__name__)

State = PairTrade.State
# An entry signal is acted on only while its bar is the newest closed one (or one bar late, for a slow tick).
MAX_ENTRY_SIGNAL_AGE_BARS = 1
ENTRY_SIGNALS = {Signal.Action.ENTER_LONG: PairTrade.Side.LONG_SPREAD, Signal.Action.ENTER_SHORT:
                 PairTrade.Side.SHORT_SPREAD}

# Every tick reads this (#18: compiled once, core.statements).
_ENTRY_SIGNALS = CompiledRead(lambda timeframe, until, after: Signal.objects.filter(
    timeframe=timeframe, action__in=list(ENTRY_SIGNALS), bar_time__lte=until, bar_time__gt=after,
).order_by("-bar_time", "pk").values_list("pk", "pair_id", "action"))


def open_new_trades(ctx: TradingContext, active: list[PairTrade], report: TickReport, *,
                    paused: dict[int, Halt] | None = None) -> list[PairTrade]:
    """Plan trades for fresh entry signals of the account's level, best |z| first, within the account's limits;
    ``paused``: the pairs whose entries a halt stops (by pair id).

    Each plan is written in one transaction that locks the account row and re-checks halts and limits there, so
    two bots (or a bot and a person raising a halt) can't both pass the checks with stale counts.
    """
    account = ctx.account
    if refusal := level_refusal(account):
        report.skipped.append(f"no new trades: {refusal}")
        return []
    # One trade per instrument at a time: in one-way mode the exchange nets an account's positions per symbol, and
    # only a leg that is alone on its symbol can be closed exactly with reduce-only orders and reconciled.
    held_symbols = {i.pk: i.symbol for t in active for i in (t.pair.y_instrument, t.pair.x_instrument)}
    fresh = _fresh_entry_signals(ctx, active, held_symbols, report)
    if not fresh:
        return []
    limits = limits_for(account)
    max_trades = account.max_concurrent_trades
    if limits.max_open_trades is not None:
        # 0 is a limit (a trader stopping new entries), not "no limit": only None leaves the account's own cap.
        max_trades = min(max_trades, limits.max_open_trades)
    free = max_trades - len(active)
    if free <= 0:
        report.skipped.append(f"{len(fresh)} entry signal(s): the account already has {len(active)} trades "
                              f"(limit {max_trades})")
        return []
    used = set(PairTrade.objects.filter(account=account, entry_signal_id__in=fresh)
               .values_list("entry_signal_id", flat=True))
    fresh = [signal_id for signal_id in fresh if signal_id not in used]
    if not fresh:
        return []
    paused = paused or {}
    candidates = []
    for signal in Signal.objects.filter(pk__in=fresh).select_related("pair__y_instrument", "pair__x_instrument"):
        if signal.pair_id in paused:
            report.skipped.append(f"{signal.pair}: paused: {paused[signal.pair_id].reason}"[:500])
            continue
        candidates.append((signal, ENTRY_SIGNALS[signal.action]))
    candidates.sort(key=lambda c: (-abs(c[0].zscore), c[0].pair_id))
    exposure_cap = account.capital * account.leverage
    if limits.max_gross_exposure is not None:
        exposure_cap = min(exposure_cap, limits.max_gross_exposure)
    budget = _budget_per_leg(account)
    if limits.max_pair_notional is not None:
        # Each leg takes at most the per-leg budget, so half the cap per leg keeps both legs within it.
        budget = min(budget, limits.max_pair_notional / 2)
    return _plan_candidates(ctx, candidates[:free], busy_instruments=set(held_symbols), max_trades=max_trades,
                            exposure_cap=exposure_cap, budget=budget, report=report)


def _fresh_entry_signals(ctx: TradingContext, active: list[PairTrade], held_symbols: dict[int, str],
                         report: TickReport) -> list[int]:
    """Ids of the newest entry signal of each pair the account may open now: its level, active, on its exchange,
    the rule still in that position, no leg held by another trade of the account, no trade open on the pair."""
    account = ctx.account
    bar = timedelta(milliseconds=timeframe_ms(ctx.config.timeframe))
    newest_closed_bar = ctx.now - bar
    busy_pairs = {t.pair_id for t in active}
    # The fresh entry signals of every pair: a two-bar range of the (bar_time, action) index and nothing else, so no
    # database can start from the pair table and walk each pair's whole signal history (MariaDB does when the read
    # is joined to the pairs). Most bars have none; then this is the only read.
    signals = [
        row for row in _ENTRY_SIGNALS.list(ctx.config.timeframe, newest_closed_bar,
                                           newest_closed_bar - bar * (MAX_ENTRY_SIGNAL_AGE_BARS + 1))
        if row[1] not in busy_pairs
    ]
    if not signals:
        return []
    # Of those pairs, the ones this account may open, with the rule's position now and the legs: by primary key.
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
    return fresh


def entry_lapsed(trade: PairTrade, *, now, timeframe: str) -> str:
    """Why a trade's entry would not be taken now by the rules above ("" when it would): its entry signal is no
    longer fresh (its bar more than MAX_ENTRY_SIGNAL_AGE_BARS behind the newest closed one), or the pair's rule has
    left that position since. (Halts and the account's level are entry_refusal's.)"""
    signal = trade.entry_signal
    if signal is None:
        return "its entry signal is gone"
    bar = timedelta(milliseconds=timeframe_ms(signal.timeframe or timeframe))
    if signal.bar_time <= now - bar - bar * (MAX_ENTRY_SIGNAL_AGE_BARS + 1):
        return f"its entry signal of {signal.bar_time:%Y-%m-%d %H:%M} is no longer fresh"
    position = (Pair.objects.filter(pk=trade.pair_id).values_list("signal_state__position", flat=True).first())
    wanted = 1 if trade.side == PairTrade.Side.LONG_SPREAD else -1
    if position != wanted:
        return "the pair's rule has left the position since"
    return ""


def _plan_candidates(ctx: TradingContext, candidates: list[tuple[Signal, str]], *, busy_instruments: set[int],
                     max_trades: int, exposure_cap: Decimal, budget: Decimal, report: TickReport
                     ) -> list[PairTrade]:
    """Size and plan each candidate in turn, skipping (with the reason) those that can't be traded now."""
    if not candidates:
        return []
    prices = ctx.closes({i for s, _ in candidates for i in (s.pair.y_instrument_id, s.pair.x_instrument_id)})
    planned = []
    for signal, side in candidates:
        pair = signal.pair
        y_price, x_price = prices.get(pair.y_instrument_id), prices.get(pair.x_instrument_id)
        if y_price is None or x_price is None:
            report.skipped.append(f"{pair}: no recent price for a leg")
            continue
        sizing = size_pair_trade(side=side, hedge_ratio=signal_hedge_ratio(signal), budget_per_leg=budget,
                                 y_price=y_price, x_price=x_price, y_filters=_filters(pair.y_instrument),
                                 x_filters=_filters(pair.x_instrument))
        if not sizing.ok:
            logger.info("account %s: %s not traded: %s", ctx.account.name, pair, sizing.reason)
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


def signal_hedge_ratio(signal: Signal) -> float:
    """The hedge ratio a trade on ``signal`` is sized and recorded with: the one its spread and z-score were
    computed with (the rolling fit), so signal, sizing and trade agree. Signals written before the signal recorded
    it fall back to the pair's (the screening window's) hedge ratio."""
    return signal.hedge_ratio if signal.hedge_ratio is not None else signal.pair.hedge_ratio


def _prepare_symbols(ctx: TradingContext, instruments: list[Instrument]) -> None:
    """Symbols known to the exchange, in one-way mode at the account's leverage, before the first order on them."""
    symbols = [ctx.symbol(i) for i in instruments]  # an instrument the exchange can't name fails here
    todo = [s for s in symbols if (ctx.account.pk, s, ctx.account.leverage) not in _prepared]
    if todo:
        ctx.exchange.prepare_account(todo, leverage=ctx.account.leverage)
        _prepared.update((ctx.account.pk, s, ctx.account.leverage) for s in todo)


def _budget_per_leg(account: ExchangeAccount) -> Decimal:
    """The per-trade budget, scaled by the level's capital weight on levels that trade real capital."""
    level = account.level
    if level.trades_real_capital:
        return account.per_trade_budget * level.capital_weight
    return account.per_trade_budget


def _filters(instrument: Instrument) -> LegFilters:
    return LegFilters(instrument.qty_step, instrument.min_qty, instrument.max_qty, instrument.min_notional)


def pair_off_level(account: ExchangeAccount, pair_id: int) -> str:
    """Why ``account`` may not open a trade on the pair as it stands in the database now ("" when it may): a person
    or the grading moved it off the account's level, or it was retired, since the tick read it."""
    row = Pair.objects.filter(pk=pair_id).values_list("level_id", "status").first()
    if row is None or row[1] != Pair.Status.ACTIVE:
        return f"pair {pair_id} is no longer active"
    if row[0] != account.level_id:
        return f"pair {pair_id} has left the account's level"
    return ""


def _plan_trade(ctx: TradingContext, signal: Signal, side: str, sizing, *, max_trades: int, exposure_cap: Decimal,
                report: TickReport) -> PairTrade | None:
    account = ctx.account
    pair = signal.pair
    # No savepoint inside a caller's transaction (a replay's bar): the block returns, it doesn't raise, on every
    # refusal, and only the insert below, which may collide, needs one.
    with transaction.atomic(savepoint=False):
        lock_account(account)
        ctx.hold_lease()  # after the account row (execution.locks' order): only the lease holder plans
        # The halts in force now, read under the account's lock: a halt raised by the guard or a person a moment
        # ago stops this plan.
        halt = entry_blocked_by(list(active_halts(account=account, now=ctx.now)), pair_id=pair.pk)
        if halt is not None:
            report.skipped.append(f"halted while planning: {halt.reason}"[:500])
            return None
        # The level too: the entry signals were matched to the account's level at the start of the tick.
        if off_level := pair_off_level(account, pair.pk):
            report.skipped.append(f"{pair}: {off_level} while planning")
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
                    state_changed_at=ctx.now, hedge_ratio=signal_hedge_ratio(signal), entry_zscore=signal.zscore,
                    y_qty=sizing.y.qty, x_qty=sizing.x.qty, gross_notional=sizing.gross_notional,
                )
        except IntegrityError:
            return None  # this signal was taken by another run of the account's bot
        orders = [
            # planned_at: when the bot decided, as for every later order (the guard counts refusals by it).
            Order(trade=trade, instrument=instrument, leg=leg, action=Order.Action.OPEN, attempt=1,
                  side=leg_order.side, qty=leg_order.qty, reference_price=leg_order.price, planned_at=ctx.now,
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
