"""Shared column types, and reading one page of a long list.

One precision for every price, quantity and money column: 32 digits with 12 after the point holds quantities
down to 1e-12 and notionals up to 1e20, which covers sub-satoshi tick sizes and meme-coin volumes alike.
Statistics (z-scores, p-values, hedge ratios) are floats: they are estimates, not amounts.
"""

from django.db import models

DECIMAL_MAX_DIGITS = 32
DECIMAL_PLACES = 12


def decimal_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=DECIMAL_MAX_DIGITS, decimal_places=DECIMAL_PLACES, **kwargs)


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def page_rows(queryset, offset: int, limit: int) -> tuple[list, bool]:
    """Rows ``offset`` to ``offset + limit`` of ``queryset`` and whether more follow, in two short queries: the
    page's primary keys alone (a walk down an index, however many rows match), then those rows with everything the
    queryset joins and prefetches. Asked in one query, MariaDB may join first and sort a million rows for a page."""
    keys = list(queryset.values_list("pk", flat=True)[offset:offset + limit + 1])
    has_next = len(keys) > limit
    keys = keys[:limit]
    found = {row.pk: row for row in queryset.order_by().filter(pk__in=keys)}
    return [found[key] for key in keys if key in found], has_next


def count_up_to(queryset, limit: int) -> int | None:
    """The number of rows of ``queryset`` when at most ``limit``, else None; never counts more than limit + 1 rows
    (and drops the ordering, which the count does not need and which would sort every matching row)."""
    counted = queryset.order_by()[:limit + 1].count()
    return counted if counted <= limit else None
