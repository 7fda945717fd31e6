"""Trading performance metrics: hand-computed cases and properties that hold for any list of results."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairs.quant.performance import equity_returns, max_drawdown, sharpe_ratio, sortino_ratio, trade_metrics

# --- trade_metrics --------------------------------------------------------------------------------------------


def test_trade_metrics_of_a_mixed_list():
    # wins 2 and 3, losses -1 and -2, a zero result that is not a win.
    metrics = trade_metrics([2.0, -1.0, 3.0, -2.0, 0.0])
    assert metrics.trades == 5
    assert metrics.wins == 2
    assert metrics.win_rate == pytest.approx(0.4)
    assert metrics.gross_profit == pytest.approx(5.0)
    assert metrics.gross_loss == pytest.approx(3.0)
    assert metrics.profit_factor == pytest.approx(5 / 3)
    assert metrics.total == pytest.approx(2.0)
    assert metrics.mean == pytest.approx(0.4)
    # 0.4 * average win 2.5 - 0.4 * average loss 1.5
    assert metrics.expectancy == pytest.approx(0.4)


def test_trade_metrics_expectancy_with_uneven_wins_and_losses():
    # 3 wins of 1, 1 loss of 5: 0.75 * 1 - 0.25 * 5 = -0.5
    metrics = trade_metrics([1.0, 1.0, 1.0, -5.0])
    assert metrics.win_rate == pytest.approx(0.75)
    assert metrics.profit_factor == pytest.approx(0.6)
    assert metrics.expectancy == pytest.approx(-0.5)
    assert metrics.total == pytest.approx(-2.0)


def test_profit_factor_is_infinite_with_wins_and_no_losses():
    metrics = trade_metrics([0.5, 1.5, 0.0])
    assert metrics.profit_factor == math.inf
    assert metrics.gross_loss == 0.0
    assert metrics.win_rate == pytest.approx(2 / 3)


def test_profit_factor_is_zero_with_only_losses():
    metrics = trade_metrics([-1.0, -3.0])
    assert metrics.profit_factor == 0.0
    assert metrics.win_rate == 0.0
    assert metrics.expectancy == pytest.approx(-2.0)


def test_profit_factor_is_none_with_only_flat_trades():
    metrics = trade_metrics([0.0, 0.0])
    assert metrics.profit_factor is None
    assert metrics.wins == 0
    assert metrics.win_rate == 0.0


def test_trade_metrics_with_no_trades():
    metrics = trade_metrics([])
    assert metrics.trades == 0
    assert metrics.wins == 0
    assert metrics.win_rate is None
    assert metrics.profit_factor is None
    assert metrics.mean is None
    assert metrics.expectancy is None
    assert metrics.total == 0.0


def test_trade_metrics_accepts_a_numpy_array():
    assert trade_metrics(np.array([1.0, -1.0])).profit_factor == pytest.approx(1.0)


# --- max_drawdown ---------------------------------------------------------------------------------------------


def test_max_drawdown_picks_the_largest_fall_from_a_running_peak():
    # 120 -> 90 is 25% of the peak; 130 -> 117 is only 10%.
    assert max_drawdown([100, 120, 90, 130, 117]) == pytest.approx(0.25)


def test_max_drawdown_of_the_later_deeper_fall():
    # 110 -> 99 is 10%; 150 -> 105 is 30%.
    assert max_drawdown([100, 110, 99, 150, 120, 105, 140]) == pytest.approx(0.3)


@pytest.mark.parametrize("curve", [[], [100.0], [100, 101, 105, 105, 200]])
def test_max_drawdown_is_zero_without_a_fall(curve):
    assert max_drawdown(curve) == 0.0


# --- sharpe / sortino -----------------------------------------------------------------------------------------

RETURNS = [0.01, 0.02, -0.01, 0.03]


def test_sharpe_ratio_by_hand():
    # mean 0.0125, sample std sqrt(8.75e-4 / 3)
    expected = 0.0125 / math.sqrt(8.75e-4 / 3) * math.sqrt(252)
    assert expected == pytest.approx(11.6189, rel=1e-4)
    assert sharpe_ratio(RETURNS, 252) == pytest.approx(expected)
    by_statistics = statistics.mean(RETURNS) / statistics.stdev(RETURNS) * math.sqrt(252)
    assert sharpe_ratio(RETURNS, 252) == pytest.approx(by_statistics)


def test_sortino_ratio_by_hand():
    # downside deviation sqrt((0 + 0 + 0.01**2 + 0) / 4) = 0.005
    assert sortino_ratio(RETURNS, 252) == pytest.approx(0.0125 / 0.005 * math.sqrt(252))
    assert sortino_ratio(RETURNS, 1) == pytest.approx(2.5)


@pytest.mark.parametrize("returns", [[], [0.01]])
def test_ratios_are_none_with_fewer_than_two_periods(returns):
    assert sharpe_ratio(returns, 252) is None
    assert sortino_ratio(returns, 252) is None


def test_sharpe_is_none_with_zero_dispersion():
    assert sharpe_ratio([0.01, 0.01, 0.01], 252) is None


def test_sortino_is_none_without_a_losing_period():
    assert sortino_ratio([0.01, 0.0, 0.02], 252) is None
    assert sharpe_ratio([0.01, 0.0, 0.02], 252) is not None


def test_equity_returns():
    assert equity_returns([100, 110, 99]).tolist() == pytest.approx([0.1, -0.1])
    assert equity_returns([100]).size == 0


# --- properties -----------------------------------------------------------------------------------------------

results = st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), max_size=60)


@settings(database=None, max_examples=150, deadline=None)
@given(results)
def test_win_rate_times_trades_is_wins(values):
    metrics = trade_metrics(values)
    assert metrics.trades == len(values)
    assert metrics.wins == sum(1 for v in values if v > 0)
    if values:
        assert metrics.win_rate * metrics.trades == pytest.approx(metrics.wins)
        assert 0.0 <= metrics.win_rate <= 1.0
    else:
        assert metrics.win_rate is None


@settings(database=None, max_examples=150, deadline=None)
@given(results)
def test_profit_factor_is_gross_profit_over_gross_loss(values):
    metrics = trade_metrics(values)
    assert metrics.gross_profit == pytest.approx(math.fsum(v for v in values if v > 0))
    assert metrics.gross_loss == pytest.approx(-math.fsum(v for v in values if v < 0))
    assert metrics.gross_profit >= 0 and metrics.gross_loss >= 0
    if metrics.gross_loss > 0:
        assert metrics.profit_factor == pytest.approx(metrics.gross_profit / metrics.gross_loss)
    elif metrics.gross_profit > 0:
        assert metrics.profit_factor == math.inf
    else:
        assert metrics.profit_factor is None


@settings(database=None, max_examples=150, deadline=None)
@given(results)
def test_total_is_the_sum_and_expectancy_the_mean(values):
    metrics = trade_metrics(values)
    assert metrics.total == pytest.approx(math.fsum(values), abs=1e-6)
    assert metrics.total == pytest.approx(metrics.gross_profit - metrics.gross_loss, abs=1e-6)
    if values:
        assert metrics.expectancy == pytest.approx(metrics.mean, abs=1e-6)


@settings(database=None, max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=1e6, allow_nan=False), min_size=1, max_size=60))
def test_max_drawdown_is_a_fraction_and_zero_for_a_rising_curve(curve):
    drawdown = max_drawdown(curve)
    assert 0.0 <= drawdown < 1.0
    assert max_drawdown(sorted(curve)) == 0.0
