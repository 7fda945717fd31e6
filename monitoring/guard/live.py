"""The guard as the beat runs it: the live processes' clock (``core.market_clock``: the wall clock, or the demo's
stored-data clock, against which the stale-data check then judges), the stored candles, the accounts' exchanges, the
Celery queues."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.utils import timezone
from kombu.exceptions import ChannelError

from core.clock import ManualClock
from core.market_clock import market_clock
from core.secrets import redact
from exchanges.base import TradingExchange
from exchanges.errors import TemporaryExchangeError
from exchanges.retry import RetryingExchange
from execution.models import ExchangeAccount
from execution.selectors import account_credentials
from execution.venues import account_exchange, account_trading_exchange
from monitoring.guard.cycle import GuardReport, guard_run
from notifications.models import Notification
from notifications.services import notify
from pairs.market import StoredMarket
from pairs.models import StrategyConfig

logger = logging.getLogger(__name__)

# The queues whose growth says the workers don't keep up (each account's own queue is added).
WATCHED_QUEUES = ("default", "selection", "signals", "risk", "notifications")

# The guard's exchange reads must end well inside run_guard's soft time limit (50 s): a cycle the limit kills raises
# no halt for any account. The bots' budget (10 s timeout, 5 attempts: about 57 s a call) is made for orders that
# must get through; the guard reads, and what it can't read in time stops that account's entries (fails closed),
# so it asks once more at most, at a shorter timeout: a call takes at most about 5 + 0.6 + 5 s, an account's two
# (positions, balance) about 21 s.
EXCHANGE_TIMEOUT_MS = 5_000
EXCHANGE_ATTEMPTS = 2
# No account's reads start later than this after the task started; the accounts left are reported unreadable
# without a call. The last one started ends by about 20 + 21 s, leaving the database work its time before 50 s.
EXCHANGE_BUDGET_S = 20.0


def guard_run_live(*, queue_lengths: dict[str, int] | None = None, started: float | None = None) -> GuardReport:
    """One cycle at the live clock. ``started``: when the task started (``time.monotonic()``; default now), from
    which the exchange reads' budget counts. A cycle that fails guards no account: that is told (critical, once an
    hour), not only logged, and the error raised again."""
    try:
        return _guard_run_live(queue_lengths=queue_lengths, started=started)
    except Exception as exc:
        _tell_failed(exc)
        raise


def _tell_failed(exc: Exception) -> None:
    # The worker is alive and beat sends every minute, so /health/ sees nothing wrong: only this says no account
    # is guarded. Each cycle's failure ends its transaction; this writes in one of its own (it fails too when the
    # database is what failed: logged).
    text = redact(f"the guard's cycle failed, no account's limits are being checked: {type(exc).__name__}: {exc}")
    logger.error("%s", text)
    try:
        notify(topic="guard_failed", severity=Notification.Severity.CRITICAL, text=text[:1000],
               dedupe_key=f"guard_failed:{timezone.now():%Y%m%d%H}")
    except Exception:
        logger.exception("guard: the failure could not be told")


def _guard_run_live(*, queue_lengths: dict[str, int] | None, started: float | None) -> GuardReport:
    deadline = (time.monotonic() if started is None else started) + EXCHANGE_BUDGET_S
    now = market_clock().now()
    config = StrategyConfig.current()
    market = StoredMarket(timeframe=config.timeframe, clock=ManualClock(now))
    exchange_for = guard_exchanges(market=market, config=config, deadline=deadline)
    # The bots' heartbeats are written on the wall clock (a process check), whatever clock the market runs on.
    return guard_run(now=now, market=market, exchange_for=exchange_for, queue_lengths=queue_lengths,
                     process_now=timezone.now())


def guard_exchanges(*, market: StoredMarket, config: StrategyConfig, deadline: float
                    ) -> Callable[[ExchangeAccount], TradingExchange]:
    """The guard's ``exchange_for``: each account's exchange with the guard's read budget, until ``deadline``
    (``time.monotonic()``), after which it raises (the account is then reported unreadable, without a call)."""

    def exchange_for(account: ExchangeAccount) -> TradingExchange:
        if account.mode == ExchangeAccount.Mode.PAPER:  # the simulator: no network (the checks skip it anyway)
            return account_trading_exchange(account, market=market, config=config)
        if time.monotonic() > deadline:
            raise TemporaryExchangeError(f"the guard's {EXCHANGE_BUDGET_S:g} s for exchange reads ran out before "
                                         "this account")
        venue = account_exchange(account, account_credentials(account=account), timeout_ms=EXCHANGE_TIMEOUT_MS)
        return RetryingExchange(venue, attempts=EXCHANGE_ATTEMPTS)

    return exchange_for


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
