"""Which open trades must close now, and why."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.statements import CompiledRead
from execution.models import PairTrade, Signal
from execution.services.context import TradingContext
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Pair
from risk.models import Halt

Reason = PairTrade.ExitReason
CLOSE_SIGNALS = {
    Signal.Action.EXIT: Reason.EXIT_SIGNAL,
    Signal.Action.STOP: Reason.STOP,
    Signal.Action.MAX_HOLDING: Reason.MAX_HOLDING,
}

# What still closes a trade under a halt (mode halt): a person's close, the flatten, and the stop-loss.
EXITS_THROUGH_A_HALT = frozenset({Reason.MANUAL, Reason.GUARD_HALT, Reason.STOP})

# Every tick with open trades reads this (#18: compiled once per number of pairs, core.statements).
_CLOSE_SIGNALS = CompiledRead(lambda pair_ids, timeframe, after, until: Signal.objects.filter(
    pair_id__in=pair_ids, timeframe=timeframe, action__in=list(CLOSE_SIGNALS), bar_time__gt=after, bar_time__lte=until
).order_by("bar_time").values_list("pair_id", "bar_time", "action", "zscore"))


def close_decisions(
    ctx: TradingContext, open_trades: list[PairTrade], halts: list[Halt]
) -> list[tuple[PairTrade, str, float | None]]:
    """Which open trades must close now, and why (first reason that applies, in this order). The trades are
    ``execution.bot.book.active_trades``'s: each carries its entry signal's bar time and the rule's position of its
    pair."""
    if not open_trades:
        return []
    bar = timedelta(milliseconds=timeframe_ms(ctx.config.timeframe))
    newest_closed_bar = ctx.now - bar
    entry_bar = {t.pk: t.entry_bar_time or (t.opened_at or ctx.now) - bar for t in open_trades}
    pair_ids = {t.pair_id for t in open_trades}
    close_signals: dict[int, list[tuple[datetime, str, float]]] = {}
    for pair_id, bar_time, action, zscore in _CLOSE_SIGNALS.list(sorted(pair_ids), ctx.config.timeframe,
                                                                 min(entry_bar.values()), newest_closed_bar):
        close_signals.setdefault(pair_id, []).append((bar_time, action, zscore))
    decisions = []
    for trade in open_trades:
        # The account's and system-wide halts, and the pair's own: a pair halted with "close the open trades"
        # closes this pair's trade, one in halt mode freezes it, like an account's.
        standing = [h for h in halts if h.pair_id in (None, trade.pair_id)]
        flatten = any(h.flatten for h in standing)
        # Halted (not reducing): nothing trades but what a person asks for, the flatten itself and a stop-loss:
        # a halt (a daily loss limit's above all) is there to stop losses growing, never to hold a trade past its
        # stop.
        frozen = any(h.mode == Halt.Mode.HALT for h in standing)
        signals = close_signals.get(trade.pair_id, [])
        reason, zscore = _close_reason(ctx, trade, flatten=flatten, signals=signals, entry_bar=entry_bar[trade.pk])
        if frozen and reason not in EXITS_THROUGH_A_HALT:
            continue
        if reason is not None:
            decisions.append((trade, reason, zscore))
    return decisions


def _close_reason(ctx: TradingContext, trade: PairTrade, *, flatten: bool, signals: list[tuple[datetime, str, float]],
                  entry_bar: datetime) -> tuple[str | None, float | None]:
    """(why the trade must close, the z of the signal that says so), the first reason that applies; (None, None)
    when it stays open."""
    pair: Pair = trade.pair
    if trade.close_requested_at:
        return Reason.MANUAL, None
    if flatten:
        return Reason.GUARD_HALT, None
    if pair.consecutive_failures >= ctx.config.max_consecutive_failures:
        return Reason.COINTEGRATION_BROKEN, None
    if pair.level_id != ctx.account.level_id or pair.status == Pair.Status.RETIRED:
        return Reason.LEVEL_CHANGED, None
    signal = next((s for s in signals if s[0] > entry_bar), None)
    if signal is not None:
        return CLOSE_SIGNALS[signal[1]], signal[2]
    if (trade.rule_position or 0) != (1 if trade.side == PairTrade.Side.LONG_SPREAD else -1):
        # The rule is flat (or the other way) without an exit signal the bot saw, e.g. it restarted.
        return Reason.EXIT_SIGNAL, None
    return None, None
