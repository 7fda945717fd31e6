"""The pipelines: which task follows which, declared once, above every app.

A lower app never names the task that follows it: fetching candles doesn't know that signals come next, nor the
screen that grading follows it. Beat schedules these pipelines (``statarb_site.periodic``); each is a Celery chain
of the apps' own tasks, so every step still runs on its own queue. A step that fails stops the chain; the next
scheduled run catches up (signals and grading are idempotent).
"""

from __future__ import annotations

from celery import chain, shared_task

from execution.tasks import compute_signals, dispatch_bots
from ladder.tasks import update_pair_statistics
from pairs.tasks import fetch_market_data, screen_pairs


def market_data_chain():
    """New closed candles, then the signals on them, then a tick of every bot."""
    return chain(fetch_market_data.si(), compute_signals.si(), dispatch_bots.si())


def signals_chain():
    """The signals at the newest closed bar (catching up after a failed fetch), then a tick of every bot."""
    return chain(compute_signals.si(), dispatch_bots.si())


def screening_chain(lookback_bars: int | None = None):
    """Screen the universe (fanned out over the selection workers when configured), then grade every pair."""
    return chain(screen_pairs.si(lookback_bars), update_pair_statistics.si())


@shared_task
def market_data_pipeline() -> str:
    return market_data_chain().apply_async().id


@shared_task
def signals_pipeline() -> str:
    return signals_chain().apply_async().id


@shared_task
def screening_pipeline(lookback_bars: int | None = None) -> str:
    return screening_chain(lookback_bars).apply_async().id
