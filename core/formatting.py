"""How times and exact numbers are written for people and for JSON, in one place.

Times are ISO 8601 UTC with a ``Z`` (``2021-03-01T07:00:00Z``); Decimals are plain text without exponent and without
the database columns' zero padding (``0.01``, ``50000``), the way exchanges write numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CENT = Decimal("0.01")


def iso(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 UTC (``...Z``), None for None; a naive datetime is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC."""
    return datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC).strftime(ISO_FORMAT)


def plain(number: Decimal) -> str:
    """A Decimal as plain text without exponent or trailing zeros ("0.01", "10", "0")."""
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "") else text


def plain_or_none(number: Decimal | None) -> str | None:
    return None if number is None else plain(number)


def cents(amount: Decimal) -> Decimal:
    """An amount of money to the cent, half up, as the dashboard shows it (Django's ``floatformat``): Decimal's own
    ``round()`` and ``format()`` go half to even, so a message read 1.92 where the page read 1.93."""
    return Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)


def cents_text(amount: Decimal | None, *, missing: str = "n/a") -> str:
    """Money as people read it in messages and reports: to the cent, half up (``cents``), without padding ("17.11",
    "5"); ``missing`` for None. The snapshots' nine decimals ("17.111377035") are noise on a phone."""
    return missing if amount is None else plain(cents(amount))
