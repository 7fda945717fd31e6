"""Monitoring tasks: thin wrappers that call services."""

from __future__ import annotations

import time
from datetime import UTC, date, timedelta

from celery import current_app, shared_task

from core.market_clock import market_clock
from monitoring.guard.live import celery_queue_lengths, guard_run_live
from monitoring.services import daily_pnl_snapshots_update


# A cycle that overlaps the next is harmless (halts are raised once, snapshots rewritten), but one that hangs must
# not pile up: the time limits end it. A cycle they end acts on no account, so its slow part, the exchange reads,
# has a budget well inside them (monitoring.guard.live.EXCHANGE_BUDGET_S), counted from the task's start.
@shared_task(acks_late=True, soft_time_limit=50, time_limit=55)
def run_guard() -> dict:
    """One guard cycle over every enabled account (beat: every minute)."""
    started = time.monotonic()
    report = guard_run_live(queue_lengths=celery_queue_lengths(current_app), started=started)
    return {"at": report.at.isoformat(), "accounts": report.accounts, "states": report.states,
            "breaches": [f"{b.check}: {b.message}" for b in report.breaches],
            "halts_raised": [h.pk for h in report.halts_raised]}


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def snapshot_daily_pnl(day: str | None = None) -> int:
    """Write every enabled account's snapshot of ``day`` (ISO date; today, UTC, by default) as its book stood at the
    day's end (or now, for today): rewriting a day's row is harmless, so a redelivery does no harm."""
    target = date.fromisoformat(day) if day else market_clock().now().astimezone(UTC).date()
    return daily_pnl_snapshots_update(day=target)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def snapshot_daily_pnl_previous_day() -> int:
    """Close the UTC day that just ended, with its trades and candles up to midnight (beat: a few minutes after)."""
    return snapshot_daily_pnl((market_clock().now().astimezone(UTC).date() - timedelta(days=1)).isoformat())


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def notify_daily_summaries(day: str | None = None) -> int:
    """Each enabled account's summary of ``day`` (ISO date; yesterday, UTC, by default) as a notification."""
    from monitoring.summaries import daily_summaries_notify

    target = date.fromisoformat(day) if day else market_clock().now().date() - timedelta(days=1)
    return daily_summaries_notify(day=target)
