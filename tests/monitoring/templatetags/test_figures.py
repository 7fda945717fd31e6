"""The dashboard's number filters: prices and quantities keep the digits that tell two values apart."""

from __future__ import annotations

from decimal import Decimal

import pytest

from monitoring.templatetags.figures import percent, price, quantity


@pytest.mark.parametrize(("value", "shown"), [
    (Decimal("0.005776837"), "0.005776837"),
    (Decimal("0.005793"), "0.005793"),
    (Decimal("48123.5"), "48123.50"),
    (Decimal("100.123456789012"), "100.12346"),
    (Decimal("100"), "100.00"),
    (Decimal("0"), "0.00"),
    (Decimal("-2.5"), "-2.50"),
    (None, "\N{EN DASH}"),
    ("nan", "\N{EN DASH}"),
])
def test_price(value, shown):
    assert price(value) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (Decimal("0.000120000000"), "0.00012"), (Decimal("615.149"), "615.149"), (Decimal("-8.500"), "-8.5"),
    (None, "\N{EN DASH}"),
])
def test_quantity(value, shown):
    assert quantity(value) == shown


def test_percent():
    assert percent(0.01234) == "1.23" and percent(None) == "\N{EN DASH}"
