"""Shared column types.

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
