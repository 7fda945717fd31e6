"""Leg sizing: the budget, the steps and the hedge the rounded quantities keep."""

from __future__ import annotations

from decimal import Decimal

from execution.sizing import MAX_HEDGE_ERROR, LegFilters, size_pair_trade

D = Decimal


def size(*, beta=0.85, budget="100", y_price="1.5", x_price="3000", y_step="1", x_step="0.01", side="long_spread"):
    return size_pair_trade(side=side, hedge_ratio=beta, budget_per_leg=D(budget), y_price=D(y_price),
                           x_price=D(x_price), y_filters=LegFilters(qty_step=D(y_step)),
                           x_filters=LegFilters(qty_step=D(x_step)))


def hedge(sizing) -> Decimal:
    return sizing.x.notional / sizing.y.notional


def test_fine_steps_keep_the_budget_and_the_hedge():
    sized = size(budget="1000", y_price="100", x_price="50", y_step="0.1", x_step="0.1")
    assert (sized.y.qty, sized.x.qty) == (D("10.0"), D("17.0"))
    assert (sized.y.side, sized.x.side) == ("buy", "sell")
    assert hedge(sized) == D("0.85")


def test_a_coarse_step_on_one_leg_brings_the_other_down_to_its_hedge():
    # 66 y (99 USDT) would want 84.15 USDT of x; at 30 USDT a step, 0.02 x (60 USDT) is all it gets (0.606, 29 %
    # under-hedged): y follows x down to 40 (60 USDT at 0.85 = 70.6 USDT -> 47 y, rounded down), within 5 % of 0.85.
    sized = size(budget="100", y_price="1.5", x_price="3000", y_step="1", x_step="0.01")
    assert sized.ok, sized.reason
    assert sized.x.qty == D("0.02") and sized.y.qty == D("47")
    assert abs(hedge(sized) - D("0.85")) / D("0.85") <= MAX_HEDGE_ERROR


def test_a_hedge_the_steps_cannot_keep_is_not_traded():
    # Both legs coarse: x is 0.02 or 0.03 (60 or 90 USDT) for a hedge that wants 84; y at 10 USDT a step can't
    # follow x closely enough with this budget.
    sized = size(budget="100", y_price="40", x_price="3000", y_step="1", x_step="0.01")
    assert not sized.ok
    assert "hedge" in sized.reason and "instead of 0.85" in sized.reason


def test_the_budget_is_never_exceeded():
    for beta in (0.3, 0.85, 1.7, -0.6):
        sized = size(beta=beta, budget="250", y_price="3.3", x_price="0.77", y_step="0.1", x_step="1")
        assert sized.ok, sized.reason
        assert max(sized.y.notional, sized.x.notional) <= D("250")
        assert abs(hedge(sized) - D(repr(abs(beta)))) / D(repr(abs(beta))) <= MAX_HEDGE_ERROR
