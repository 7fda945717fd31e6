"""The guard as the beat runs it: the live processes' clock (``core.market_clock``: the wall clock, or the demo's
stored-data clock, against which the stale-data check then judges), the stored candles, the accounts' exchanges, the
Celery queues."""

from __future__ import annotations

import logging

from django.utils import timezone
from kombu.exceptions import ChannelError

from core.clock import ManualClock
from core.market_clock import market_clock
from exchanges.retry import RetryingExchange
from execution.models import ExchangeAccount
from execution.venues import account_trading_exchange
from monitoring.guard.cycle import GuardReport, guard_run
from pairs.market import StoredMarket
from pairs.models import StrategyConfig

logger = logging.getLogger(__name__)

# The queues whose growth says the workers don't keep up (each account's own queue is added).
WATCHED_QUEUES = ("default", "selection", "signals", "risk", "notifications")


def guard_run_live(*, queue_lengths: dict[str, int] | None = None) -> GuardReport:
    now = market_clock().now()
    config = StrategyConfig.current()
    market = StoredMarket(timeframe=config.timeframe, clock=ManualClock(now))

    def exchange_for(account: ExchangeAccount):
        return RetryingExchange(account_trading_exchange(account, market=market, config=config))

    # The bots' heartbeats are written on the wall clock (a process check), whatever clock the market runs on.
    return guard_run(now=now, market=market, exchange_for=exchange_for, queue_lengths=queue_lengths,
                     process_now=timezone.now())


def celery_queue_lengths(app) -> dict[str, int]:
    """Messages waiting on each watched queue (a passive declare: nothing is created). A broker that can't say is
    logged and skipped: the guard must not stop for it."""
    names = list(WATCHED_QUEUES) + [f"execution.account.{pk}" for pk in
                                    ExchangeAccount.objects.filter(enabled=True).values_list("pk", flat=True)]
    lengths = {}
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            for name in names:
                try:
                    lengths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:  # the queue does not exist yet: nothing waits on it
                    lengths[name] = 0
    except Exception:  # any broker failure: the guard goes on without the queue check
        logger.warning("guard: the broker's queue lengths could not be read", exc_info=True)
    return lengths
