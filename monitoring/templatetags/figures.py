"""Template filters for the dashboard's figures: a fraction shown as the percentage a trader reads, prices and
quantities to the digits they carry."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template

from core.formatting import plain

register = template.Library()


@register.filter
def percent(fraction, digits: int = 2) -> str:
    """0.01234 -> "1.23" (no sign added, no "%"): ``widthratio`` would round to a whole percent, hiding a 0.4 %
    drawdown as 0. None or a non-number -> an en dash, as the dashboard shows a missing figure."""
    try:
        return f"{float(fraction) * 100:.{int(digits)}f}"
    except (TypeError, ValueError):
        return "\N{EN DASH}"


def _decimal(value) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if value is not None and number.is_finite() else None


@register.filter
def price(value, significant: int = 8) -> str:
    """A price to ``significant`` digits and at least two decimals: 0.005776837 stays 0.005776837 and 48123.5 reads
    48123.50 (``floatformat:4`` showed a 0.0058 entry next to a 0.0058 price on a coin that had moved 0.3 %)."""
    number = _decimal(value)
    if number is None:
        return "\N{EN DASH}"
    decimals = max(2, int(significant) - 1 - number.adjusted()) if number else 2
    whole, _, fraction = f"{number:.{decimals}f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


@register.filter
def quantity(value) -> str:
    """A quantity as stored, without trailing zeros (a 0.00012 BTC leg is not 0.0001)."""
    number = _decimal(value)
    return "\N{EN DASH}" if number is None else plain(number)
