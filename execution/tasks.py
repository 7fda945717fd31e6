"""Execution tasks: thin wrappers that call services."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task

from execution.services.signals import signals_update
from pairs.models import SelectionConfig


# Each (pair, bar) is signalled once and the rule state advances only on new bars: safe to run twice.
@shared_task(acks_late=True, soft_time_limit=10 * 60, time_limit=12 * 60)
def compute_signals() -> dict:
    """Advance every active pair's spread rule to the newest closed bar and write its signals."""
    return asdict(signals_update(config=SelectionConfig.current()))
