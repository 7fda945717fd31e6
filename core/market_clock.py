"""Which clock the live processes run on: the machine's, or the demo's stored-data clock.

The setting STATARB_MARKET_CLOCK is "wall" (the default, and the only value production accepts) or "stored" (set by
``make demo`` for the served part only). With "stored", the tasks that live trading runs (the signals, every bot
tick, the guard, the daily snapshots) and the dashboard ask ``market_clock()`` for the time and get the
``StoredDataClock`` row's moment, frozen for that task: the same code then trades through the stored candles as
it would trade live, a bar per step of ``stored_clock_step`` (beat calls it every few seconds through
``statarb_site.pipelines.stored_clock_pipeline``). When the clock reaches the newest stored bar it stops there and
says so (``ended_at``; the log, a notification and every dashboard page).

Only paper accounts trade on it: the clock is a ``SimulatedClock``, and a bot refuses to run a demo or real account
on one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.clock import Clock, SimulatedClock, WallClock
from core.models import StoredDataClock

logger = logging.getLogger(__name__)

WALL = "wall"
STORED = "stored"
CLOCK_CHOICES = (WALL, STORED)
# A step that comes sooner than this share of the configured pace after the last one is a duplicate (a second beat,
# a redelivered message): the clock does not move for it.
MIN_STEP_SHARE = 0.5


class StoredClockNotStarted(RuntimeError):
    """STATARB_MARKET_CLOCK is "stored" but no stored-data clock was started (``manage.py run_stack`` starts it)."""


def stored_clock_enabled() -> bool:
    return getattr(settings, "STATARB_MARKET_CLOCK", WALL) == STORED


def market_clock() -> Clock:
    """The clock of the live processes: the wall clock, or (STATARB_MARKET_CLOCK=stored) the stored-data clock's
    moment, read now and frozen, so a task sees one time throughout."""
    if not stored_clock_enabled():
        return WallClock()
    state = StoredDataClock.objects.filter(pk=1).first()
    if state is None:
        raise StoredClockNotStarted(
            "STATARB_MARKET_CLOCK is 'stored' but the stored-data clock was never started: `manage.py run_stack` "
            "starts it (make demo), or unset STATARB_MARKET_CLOCK to run on the wall clock."
        )
    return SimulatedClock(state.moment)


def stored_clock_state() -> StoredDataClock | None:
    """The stored-data clock when the setting turns it on (for the pages that show it), else None."""
    if not stored_clock_enabled():
        return None
    return StoredDataClock.objects.filter(pk=1).first()


@transaction.atomic
def stored_clock_start(*, start: datetime | None, end: datetime, bar: timedelta, wall_seconds: float
                       ) -> StoredDataClock:
    """Start the clock at ``start`` (a bar close; None: resume where it stands, or, on a first start, ``end`` less a
    week), stepping ``bar`` every ``wall_seconds`` up to ``end`` (the newest stored bar's close). Moving an existing
    clock back is refused: the accounts' trades and snapshots would lie in its future."""
    if wall_seconds <= 0:
        raise ValueError(f"the clock's pace must be positive, got {wall_seconds} s a bar")
    state = StoredDataClock.objects.select_for_update().filter(pk=1).first()
    if start is None:
        start = state.moment if state is not None else end - timedelta(days=7)
    if start.tzinfo is None:
        raise ValueError(f"the clock keeps aware datetimes, got {start!r}")
    if state is not None and start < state.moment:
        raise ValueError(f"the stored-data clock already stands at {state.moment:%Y-%m-%d %H:%M} UTC: it can't go "
                         f"back to {start:%Y-%m-%d %H:%M} (`make clean` starts over)")
    start = min(start, end)
    ended_at = None
    if start >= end:
        ended_at = state.ended_at if state is not None and state.ended_at is not None else timezone.now()
    values = {"moment": start, "end": end, "bar": bar, "wall_seconds": wall_seconds, "ended_at": ended_at}
    if state is None or start != state.moment:
        values["start"] = start
    state, _ = StoredDataClock.objects.update_or_create(pk=1, defaults=values)
    return state


@dataclass(frozen=True)
class ClockStep:
    clock: StoredDataClock
    stepped: bool  # the clock moved one bar
    ended_now: bool  # this step reached the end of the stored data


@transaction.atomic
def stored_clock_step(*, wall_now: datetime | None = None) -> ClockStep:
    """Move the clock one bar (not past the newest stored bar's close; reaching it ends the clock, logged once)."""
    wall_now = wall_now or timezone.now()
    state = StoredDataClock.objects.select_for_update().filter(pk=1).first()
    if state is None:
        raise StoredClockNotStarted("the stored-data clock was never started (`manage.py run_stack` starts it)")
    if state.ended_at is not None:
        return ClockStep(state, stepped=False, ended_now=False)
    since = (wall_now - state.stepped_at).total_seconds() if state.stepped_at is not None else None
    if since is not None and since < state.wall_seconds * MIN_STEP_SHARE:
        return ClockStep(state, stepped=False, ended_now=False)
    state.moment = min(state.moment + state.bar, state.end)
    state.stepped_at = wall_now
    ended_now = state.moment >= state.end
    if ended_now:
        state.ended_at = wall_now
        logger.warning("stored-data clock: the stored candles end at %s UTC; the clock stops there and paper "
                       "accounts open no new trades on new bars", f"{state.end:%Y-%m-%d %H:%M}")
    state.save()
    return ClockStep(state, stepped=True, ended_now=ended_now)
