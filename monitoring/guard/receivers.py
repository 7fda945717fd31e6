"""What the guard does when something happens elsewhere: a trade finished (check that account now), a drawdown halt
cleared (the peak starts afresh). Telling people of halts is ``monitoring.halt_notifications``'s."""

from __future__ import annotations

import logging

from execution.models import PairTrade
from monitoring.guard.cycle import guard_run
from pairs.market import StoredMarket
from pairs.models import StrategyConfig
from risk.models import AccountGuardState, Halt

logger = logging.getLogger(__name__)


def on_trade_finished(sender, *, trade: PairTrade, now, market=None, **kwargs) -> None:
    """A loss may have crossed a limit: run the guard for this account at the bot's clock, at once."""
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
