"""Reads of the selection layer."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from pairs.models import Level, Pair


def pairs_with_legs() -> QuerySet[Pair]:
    return Pair.objects.select_related("y_instrument", "x_instrument", "level")


def pairs_of_level(*, level: Level) -> QuerySet[Pair]:
    return pairs_with_legs().filter(level=level, status=Pair.Status.ACTIVE)


def level_counts() -> list[dict]:
    """Each level with how many active pairs it holds, in ladder order (levels with none included)."""
    counts = dict(
        Pair.objects.filter(status=Pair.Status.ACTIVE, level__isnull=False)
        .values_list("level_id")
        .annotate(n=Count("id"))
        .values_list("level_id", "n")
    )
    return [{"level": level, "pairs": counts.get(level.pk, 0)} for level in Level.objects.all()]
