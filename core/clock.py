"""The one clock of the engine: everything that asks "what time is it?" asks a ``Clock``.

Live trading passes the wall clock; a replay passes a clock it moves to each bar's close; tests pass a clock they
set; the served demo's live processes get a ``SimulatedClock`` at the stored-data clock's time
(``core.market_clock``). The bot tick, the paper exchange, the market view and the replay all take one, so the same
code runs in all of them, as NautilusTrader's kernel takes a live or a test clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from django.utils import timezone


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class WallClock:
    """The machine's clock (Django's ``timezone.now``)."""

    def now(self) -> datetime:
        return timezone.now()


class ManualClock:
    """A clock that stands still until ``set``: a replay's bar close, or a test's moment."""

    def __init__(self, moment: datetime):
        self._moment = _aware(moment)

    def now(self) -> datetime:
        return self._moment

    def set(self, moment: datetime) -> None:
        self._moment = _aware(moment)

    def advance(self, delta) -> datetime:
        self._moment = self._moment + delta
        return self._moment


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"a clock keeps aware datetimes, got {moment!r}")
    return moment


class SimulatedClock(ManualClock):
    """A clock that is not the machine's and that live processes nevertheless run on: the demo's stored-data clock
    (``core.market_clock``). Only paper accounts trade on it: a bot refuses to run a demo or real account on a clock
    whose ``simulated`` is true (``execution.bot.tick``)."""

    simulated = True
