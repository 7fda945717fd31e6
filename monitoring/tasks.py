"""Monitoring tasks: thin wrappers that call services."""

from __future__ import annotations

from datetime import date, timedelta

from celery import shared_task
from django.utils import timezone

from monitoring.services import daily_pnl_snapshots_update


# Both rewrite a day's rows from the trades, so a redelivery after a worker crash (acks_late) does no harm.
@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def snapshot_daily_pnl(day: str | None = None) -> int:
    """Update every enabled account's PnL snapshot for ``day`` (ISO date; today, UTC, by default)."""
    target = date.fromisoformat(day) if day else timezone.now().date()
    return daily_pnl_snapshots_update(day=target)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def snapshot_daily_pnl_previous_day() -> int:
    """Final snapshot of the UTC day that just ended (beat runs it a few minutes after midnight)."""
    return daily_pnl_snapshots_update(day=timezone.now().date() - timedelta(days=1))


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def notify_daily_summaries(day: str | None = None) -> int:
    """Each enabled account's summary of ``day`` (ISO date; yesterday, UTC, by default) as a notification."""
    from monitoring.summaries import daily_summaries_notify

    target = date.fromisoformat(day) if day else timezone.now().date() - timedelta(days=1)
    return daily_summaries_notify(day=target)
