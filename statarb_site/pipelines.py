"""The pipelines: which task follows which, declared once, above every app.

A lower app never names the task that follows it: fetching candles doesn't know that signals come next, nor the
screen that grading follows it. Beat schedules these pipelines (``statarb_site.periodic``); each is a Celery chain
of the apps' own tasks, so every step still runs on its own queue. A step that fails stops the chain; the next
scheduled run catches up (signals and grading are idempotent).
"""

from __future__ import annotations

import logging

from celery import chain, shared_task

from core.market_clock import stored_clock_enabled, stored_clock_step
from execution.tasks import compute_signals, dispatch_bots
from ladder.tasks import update_pair_statistics
from monitoring.tasks import run_guard
from notifications.models import Notification
from notifications.services import notify
from pairs.tasks import fetch_market_data, screen_pairs

logger = logging.getLogger(__name__)


def market_data_chain():
    """New closed candles, then the signals on them, then a tick of every bot."""
    return chain(fetch_market_data.si(), compute_signals.si(), dispatch_bots.si())


def signals_chain():
    """The signals at the newest closed bar (catching up after a failed fetch), then a tick of every bot."""
    return chain(compute_signals.si(), dispatch_bots.si())


def screening_chain(lookback_bars: int | None = None):
    """Screen the universe (fanned out over the selection workers when configured), then grade every pair."""
    return chain(screen_pairs.si(lookback_bars), update_pair_statistics.si())


def stored_clock_chain():
    """The demo's stored-data clock moved one bar: the signals on it, a tick of every bot, a guard cycle (the same
    tasks as live, at the moved clock)."""
    return chain(compute_signals.si(), dispatch_bots.si(), run_guard.si())


@shared_task
def market_data_pipeline() -> str:
    if stored_clock_enabled():
        # The demo's clock walks through the stored candles: candles of today would be its far future.
        logger.info("market data: not fetched, the processes run on the stored-data clock (STATARB_MARKET_CLOCK)")
        return ""
    return market_data_chain().apply_async().id


@shared_task(ignore_result=True)
def stored_clock_pipeline() -> dict:
    """One step of the demo's stored-data clock (beat, every STATARB_DEMO_BAR_SECONDS): move it one bar, then run
    ``stored_clock_chain``; at the end of the stored data say so (log, a notification; the pages show it)."""
    if not stored_clock_enabled():
        logger.warning("stored-data clock step skipped: STATARB_MARKET_CLOCK is not 'stored'")
        return {"stepped": False, "reason": "STATARB_MARKET_CLOCK is not 'stored'"}
    step = stored_clock_step()
    clock = step.clock
    if step.ended_now:
        notify(topic="stored_clock_ended", severity=Notification.Severity.WARNING,
               text=f"Demo: the stored data ran out at {clock.end:%Y-%m-%d %H:%M} UTC; the stored-data clock stopped "
                    "there and the paper accounts get no new bars.",
               dedupe_key=f"stored_clock_ended:{clock.end:%Y%m%d%H%M}")
    if step.stepped:
        stored_clock_chain().apply_async()
    if clock.ended_at is not None:
        # Nothing left to step: beat stops sending the step (`run_stack` enables it again when it resumes the clock).
        from django_celery_beat.models import PeriodicTask, PeriodicTasks

        from statarb_site.demo_clock import SCHEDULE_NAME

        if PeriodicTask.objects.filter(name=SCHEDULE_NAME, enabled=True).update(enabled=False):
            PeriodicTasks.update_changed()  # a queryset update doesn't tell beat: this does
        logger.info("stored-data clock: stopped at %s UTC, the end of the stored data", f"{clock.end:%Y-%m-%d %H:%M}")
    return {"stepped": step.stepped, "moment": clock.moment.isoformat(), "ended": clock.ended_at is not None}


@shared_task
def signals_pipeline() -> str:
    return signals_chain().apply_async().id


@shared_task
def screening_pipeline(lookback_bars: int | None = None) -> str:
    return screening_chain(lookback_bars).apply_async().id
