"""When perpetual contracts settle funding: the one rule the paper exchange, the bots and the market data share.

Settlements fall on the multiples of an instrument's funding interval since the epoch (for 8 h: 00:00, 08:00 and
16:00 UTC). Pure: no Django, no exchange client.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

# Bybit's usual funding interval, for instruments that don't say theirs.
DEFAULT_FUNDING_INTERVAL_MINUTES = 480
# Every Bybit funding interval is a whole number of hours (1, 2, 4 or 8): every settlement falls on a whole hour.
FUNDING_GRID_MINUTES = 60

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def funding_interval_minutes(stored: int | None) -> int:
    """An instrument's funding interval in minutes: the one stored, else the default."""
    return stored or DEFAULT_FUNDING_INTERVAL_MINUTES


def settlement_times(after: datetime, until: datetime, interval_minutes: int) -> Iterator[datetime]:
    """Funding settlement times t with ``after`` < t <= ``until`` (UTC datetimes), oldest first."""
    step = interval_minutes * 60_000
    t = ((after - _EPOCH) // _MS // step + 1) * step
    last = (until - _EPOCH) // _MS
    while t <= last:
        yield _EPOCH + t * _MS
        t += step


def settles_between(after: datetime, until: datetime, interval_minutes: int) -> bool:
    """Does a settlement fall in (``after``, ``until``]?"""
    return next(settlement_times(after, until, interval_minutes), None) is not None
