"""What a trade's side says of its legs: x's direction follows the hedge ratio's sign."""

from __future__ import annotations

import pytest

from execution.models import PairTrade


@pytest.mark.parametrize(("side", "hedge_ratio", "label"), [
    ("long_spread", 1.3, "Long spread (buy y, sell x)"),
    ("short_spread", 0.7, "Short spread (sell y, buy x)"),
    ("long_spread", -0.126, "Long spread (buy y, buy x, both one way: hedge ratio < 0)"),
    ("short_spread", -1.324, "Short spread (sell y, sell x, both one way: hedge ratio < 0)"),
    ("long_spread", 0.0, "Long spread (buy y, no x)"),
])
def test_the_side_label_says_what_each_leg_does(side, hedge_ratio, label):
    assert PairTrade(side=side, hedge_ratio=hedge_ratio).side_label == label
