"""Template filters for the dashboard's figures: a fraction shown as the percentage a trader reads."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(fraction, digits: int = 2) -> str:
    """0.01234 -> "1.23" (no sign added, no "%"): ``widthratio`` would round to a whole percent, hiding a 0.4 %
    drawdown as 0. None or a non-number -> an en dash, as the dashboard shows a missing figure."""
    try:
        return f"{float(fraction) * 100:.{int(digits)}f}"
    except (TypeError, ValueError):
        return "\N{EN DASH}"
