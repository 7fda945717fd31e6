"""Ladder tasks: thin wrappers that call services."""

from __future__ import annotations

from celery import shared_task

from core.market_clock import market_clock
from ladder.services import pair_statistics_update
from pairs.market import stored_clock_end
from pairs.models import StrategyConfig
from pairs.services.maintenance import selection_maintenance


# Rewrites each pair's statistics from the data; a level move is audited and idempotent for the same evidence.
@shared_task(acks_late=True, soft_time_limit=30 * 60, time_limit=35 * 60)
def update_pair_statistics() -> dict:
    """Sanity checks and cleanup, then statistics and grading of every pair (chained after each screening)."""
    config = StrategyConfig.current()
    # On the demo's stored-data clock the bars after it are its future: neither the checks nor the grading read them.
    maintenance = selection_maintenance(config=config, now=market_clock().now())
    outcome = pair_statistics_update(config=config, end=stored_clock_end(config.timeframe))
    data = outcome.as_json()
    return {"n_pairs": data["n_pairs"], "promoted": data["promoted"], "demoted": data["demoted"],
            "maintenance": maintenance.as_dict()}
