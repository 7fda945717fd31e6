"""Writes of monitoring: the daily PnL snapshots of the accounts, measured as the guard measures them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from core.clock import ManualClock
from core.market_clock import market_clock
from execution.models import ExchangeAccount
from monitoring.guard.book import account_books
from monitoring.guard.cycle import snapshots_write
from pairs.market import StoredMarket
from pairs.models import StrategyConfig
from risk.models import DailyPnlSnapshot


def _day_end(day: date) -> tuple[datetime, datetime]:
    """(the moment the day's book is read at, the market's clock): the day's last microsecond and its midnight, or
    now (``core.market_clock``) for a day that has not ended."""
    midnight = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    clock = min(market_clock().now(), midnight)
    return min(clock, midnight - timedelta(microseconds=1)), clock


def daily_pnl_snapshots_write(*, accounts: list[ExchangeAccount], day: date) -> int:
    """Write (or rewrite) the accounts' snapshots of one UTC day, marked to market at the day's end (or now):
    start-of-day equity from the day before, realised, unrealised, fees, funding, trades, peak and drawdown.
    Safe to run any number of times."""
    if not accounts:
        return 0
    end, clock = _day_end(day)
    market = StoredMarket(timeframe=StrategyConfig.current().timeframe, clock=ManualClock(clock))
    snapshots_write(account_books(accounts, now=end, market=market), now=end)
    return len(accounts)


def daily_pnl_snapshot_update(*, account: ExchangeAccount, day: date) -> DailyPnlSnapshot:
    daily_pnl_snapshots_write(accounts=[account], day=day)
    return DailyPnlSnapshot.objects.get(account=account, date=day)


def daily_pnl_snapshots_update(*, day: date) -> int:
    """Snapshot every enabled account for ``day``."""
    return daily_pnl_snapshots_write(accounts=list(ExchangeAccount.objects.filter(enabled=True)), day=day)
