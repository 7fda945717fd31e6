"""What the guard does when something happens elsewhere: a trade finished (check that account now), a halt raised
or cleared (tell people; a cleared drawdown halt starts the peak afresh)."""

from __future__ import annotations

import logging

from execution.models import PairTrade
from monitoring.guard.cycle import guard_run
from notifications.models import Notification
from notifications.services import notify
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


def on_halt_raised(sender, *, halt: Halt, **kwargs) -> None:
    if halt.source == Halt.Source.BOT:
        return  # the bot tells people itself, with what it found
    scope = halt.account.name if halt.account_id else "all accounts"
    what = {Halt.Mode.HALT: "HALTED", Halt.Mode.REDUCE: "reducing (no new entries)"}[halt.mode]
    if halt.pair_id:
        what = f"pair {halt.pair} paused"
    latch = f" until {halt.until:%Y-%m-%d %H:%M} UTC" if halt.until else " until a trader clears it"
    notify(topic="guard_halt", severity=Notification.Severity.CRITICAL,
           text=f"[{scope}] {what}{', flattening open trades' if halt.flatten else ''}{latch}: {halt.reason}",
           dedupe_key=f"halt_raised:{halt.pk}")


def on_halt_cleared(sender, *, halt: Halt, **kwargs) -> None:
    if halt.trigger == "drawdown" and halt.account_id:
        # A person let the account trade again after a drawdown: the drawdown is measured from here on.
        AccountGuardState.objects.filter(account_id=halt.account_id).update(peak_equity=None)
    if halt.source == Halt.Source.BOT:
        return
    scope = halt.account.name if halt.account_id else "all accounts"
    who = halt.cleared_by.get_username() if halt.cleared_by_id else "its latch ended"
    notify(topic="guard_clear", severity=Notification.Severity.INFO,
           text=f"[{scope}] halt cleared ({who}): {halt.reason}", dedupe_key=f"halt_cleared:{halt.pk}")
