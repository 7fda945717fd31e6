"""What the guard does when something happens elsewhere: a trade finished (check that account now), a drawdown halt
cleared (the peak starts afresh). Telling people of halts is ``monitoring.halt_notifications``'s."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from execution.models import PairTrade
from pairs.models import StrategyConfig
from risk.models import AccountGuardState, Halt

logger = logging.getLogger(__name__)

# Set by ``trade_finished_cycles_covered``: the (account id, clock) of each finished trade, noted instead of a cycle.
_covered: ContextVar[set[tuple[int, datetime]] | None] = ContextVar("guard_trade_finished_covered", default=None)


@contextmanager
def trade_finished_cycles_covered() -> Iterator[set[tuple[int, datetime]]]:
    """For a caller that runs, itself, a guard cycle of an account after its bot's tick at the tick's clock and in
    the tick's transaction (a replay's bar): the cycle the receiver would run after a trade finished would see
    exactly what the caller's saw (same clock, same book, the caller's halts, events and guard state already
    written; the guard itself finishes no trade), so the receiver only notes (account id, clock) in the set
    yielded, for the caller to check that its own cycle covered them."""
    noted: set[tuple[int, datetime]] = set()
    token = _covered.set(noted)
    try:
        yield noted
    finally:
        _covered.reset(token)


def on_trade_finished(sender, *, trade: PairTrade, now, market=None, **kwargs) -> None:
    """A loss may have crossed a limit: run the guard for this account at the bot's clock, at once."""
    if (covered := _covered.get()) is not None:
        covered.add((trade.account_id, now))
        return
    # Imported here, not at the app's start: every process connects this receiver, few finish trades (a
    # select_pairs command, a web worker), and the guard's modules are a tenth of a command's imports.
    from monitoring.guard.cycle import guard_run
    from pairs.market import StoredMarket

    try:
        if market is None:
            from core.clock import ManualClock

            market = StoredMarket(timeframe=StrategyConfig.current().timeframe, clock=ManualClock(now))
        guard_run(now=now, market=market, accounts=[trade.account], live=False)
    except Exception:
        # The bot's work is committed; the minute's guard cycle checks again. Never fail the caller for it.
        logger.exception("guard after trade %s finished: failed; the next cycle checks again", trade.pk)


def on_halt_cleared(sender, *, halt: Halt, **kwargs) -> None:
    if halt.trigger == "drawdown" and halt.account_id:
        # A person let the account trade again after a drawdown: the drawdown is measured from here on.
        AccountGuardState.objects.filter(account_id=halt.account_id).update(peak_equity=None)
