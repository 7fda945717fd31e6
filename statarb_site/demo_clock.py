"""The served demo's stored-data clock: started (or resumed) over the stored candles and stepped by beat.

``core.market_clock`` keeps the clock; this sets it where the stored data allow and writes the beat entry that
steps it (``statarb_site.pipelines.stored_clock_pipeline``). With STATARB_MARKET_CLOCK=wall the entry is disabled,
so a later ``make run`` never steps it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from core.audit import audit_record
from core.commands import shell_operator
from core.market_clock import stored_clock_enabled, stored_clock_start
from core.models import StoredDataClock
from execution.models import SignalState
from pairs.marketdata.validation import timeframe_ms
from pairs.models import StrategyConfig
from pairs.selectors import candle_bounds

SCHEDULE_NAME = "demo: stored-data clock"
STEP_TASK = "statarb_site.pipelines.stored_clock_pipeline"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Where a first start puts the clock when no signals were computed before it: this far before the end of the data.
DEFAULT_DAYS_BEFORE_END = 7


class NoStoredData(RuntimeError):
    """The clock has no candles to walk through."""


def demo_clock_setup(*, start: datetime | None = None, bar_seconds: float) -> StoredDataClock | None:
    """With STATARB_MARKET_CLOCK=stored: start the clock at ``start`` (None: resume it where it stands, or on a first
    start where the batch replay ended, the close of the newest bar a signal was computed on, else
    ``DEFAULT_DAYS_BEFORE_END`` days before the newest stored bar), one bar every ``bar_seconds``, and enable the
    beat entry that steps it; returns the clock. Otherwise disable that entry and return None."""
    if not stored_clock_enabled():
        if PeriodicTask.objects.filter(name=SCHEDULE_NAME, enabled=True).update(enabled=False):
            PeriodicTasks.update_changed()
        return None
    config = StrategyConfig.current()
    bar = timedelta(milliseconds=timeframe_ms(config.timeframe))
    first, last = candle_bounds(exchange=config.exchange, timeframe=config.timeframe)
    if last is None:
        raise NoStoredData(f"no {config.timeframe} candles of {config.exchange} are stored: the stored-data clock has "
                           "nothing to walk through (`manage.py demo_pipeline` imports them from STATARB_DATA_DIR)")
    end = last + bar  # the newest stored bar closes here
    if start is None and not StoredDataClock.objects.filter(pk=1).exists():
        start = _where_the_signals_end(end, bar) or max(first + bar, end - timedelta(days=DEFAULT_DAYS_BEFORE_END))
    if start is not None and (start - _EPOCH) % bar:
        # Mid-bar, every step would stay mid-bar: the paper fills, at the open of the bar in progress, would take a
        # price from before the decision, which the replay and the backtest never do.
        raise ValueError(f"the stored-data clock starts at a bar close (a whole {config.timeframe} bar, like "
                         f"{_EPOCH + (start - _EPOCH) // bar * bar:%Y-%m-%dT%H:%M}): got {start:%Y-%m-%dT%H:%M:%S} UTC")
    if start is not None and start < first + bar:
        raise ValueError(f"the stored {config.timeframe} candles begin at {first:%Y-%m-%d %H:%M} UTC: the clock can't "
                         f"start at {start:%Y-%m-%d %H:%M}")
    with transaction.atomic():
        clock = stored_clock_start(start=start, end=end, bar=bar, wall_seconds=bar_seconds)
        _schedule(bar_seconds)
        audit_record(action="stored_clock_start", channel="command", actor_label=shell_operator("run_stack"),
                     target=clock, summary=f"stored-data clock {'started' if start else 'resumed'} at "
                                           f"{clock.moment:%Y-%m-%d %H:%M} UTC, one bar every {bar_seconds:g} s")
    return clock


def _where_the_signals_end(end: datetime, bar: timedelta) -> datetime | None:
    """The close of the newest bar a pair's rule was advanced on (the batch replay's end): starting there, the
    signals task carries every pair on bar by bar, as live. None when no rule ran, or it ran to the data's end."""
    newest = SignalState.objects.order_by("-last_bar_time").values_list("last_bar_time", flat=True).first()
    if newest is None or newest + bar >= end:
        return None
    return newest + bar


def _schedule(bar_seconds: float) -> None:
    every = max(1, math.ceil(bar_seconds))
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(name=SCHEDULE_NAME, defaults={
        "task": STEP_TASK, "queue": "default", "interval": interval, "crontab": None, "enabled": True,
        "kwargs": json.dumps({}), "expire_seconds": every,  # a step that waited longer is dropped: the next one comes
        "description": "THE DEMO ONLY (STATARB_MARKET_CLOCK=stored): move the stored-data clock one bar, then the "
        "signals, a tick of every bot and a guard cycle at it.",
    })
