"""Spread diagnostics: exact cases, statistical sanity checks and statsmodels OLS cross-checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.regression.linear_model import OLS
from statsmodels.tools import add_constant

from pairs.quant.cointegration import engle_granger_batch
from pairs.quant.spread import (
    ar1_slope,
    half_life,
    hurst_exponent,
    mean_crossings,
    pair_spreads,
    return_correlation,
    spread_statistics,
    zscore,
)
from tests.pairs.quant.test_cointegration import load_real_log_prices


def ar1(seed: int, n_obs: int, phi: float) -> np.ndarray:
    shocks = np.random.default_rng(seed).normal(size=n_obs)
    values = np.empty(n_obs)
    values[0] = shocks[0]
    for t in range(1, n_obs):
        values[t] = phi * values[t - 1] + shocks[t]
    return values


def test_half_life_of_exact_geometric_decay():
    # s_t = phi^t satisfies ds_t = (phi - 1) s_{t-1} exactly, so b = phi - 1.
    phi = 0.8
    spread = phi ** np.arange(60)
    assert ar1_slope(spread) == pytest.approx(phi - 1, rel=1e-9)
    assert half_life(spread) == pytest.approx(np.log(2) / -np.log(phi), rel=1e-9)


def test_half_life_of_overshooting_decay_uses_the_absolute_persistence():
    spread = (-0.5) ** np.arange(40)
    assert half_life(spread) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(
    "spread",
    [np.arange(50.0), 1.1 ** np.arange(50), (-1.2) ** np.arange(30)],
    ids=["trend", "explosive", "explosive-oscillating"],
)
def test_half_life_without_mean_reversion_is_infinite(spread):
    assert half_life(spread) == np.inf


def test_half_life_of_constant_spread_is_nan():
    assert np.isnan(half_life(np.full(20, 3.0)))


def test_half_life_of_simulated_ar1_is_close_to_theory():
    spread = ar1(0, 50_000, phi=0.95)
    assert half_life(spread) == pytest.approx(np.log(2) / -np.log(0.95), rel=0.05)


def test_ar1_slope_matches_statsmodels_ols():
    spreads = np.column_stack([ar1(seed, 700, phi) for seed, phi in enumerate((0.5, 0.9, 0.99, 1.0))])
    slopes = ar1_slope(spreads)
    for column in range(spreads.shape[1]):
        spread = spreads[:, column]
        fit = OLS(np.diff(spread), add_constant(spread[:-1])).fit()
        assert slopes[column] == pytest.approx(fit.params[1], rel=1e-10)
    assert slopes[-1] > 0  # this random walk happens to drift away from its mean
    expected = [-np.log(2) / np.log1p(slope) if slope < 0 else np.inf for slope in slopes]
    np.testing.assert_allclose(half_life(spreads), expected)


def test_hurst_of_random_walk_white_noise_and_mean_reversion():
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=20_000))
    noise = rng.normal(size=20_000)
    assert hurst_exponent(walk) == pytest.approx(0.5, abs=0.05)
    assert abs(hurst_exponent(noise)) < 0.05
    assert hurst_exponent(ar1(2, 20_000, phi=0.95)) < 0.4


def test_hurst_is_nan_when_lagged_differences_do_not_vary():
    assert np.isnan(hurst_exponent(np.arange(300.0)))


def test_hurst_needs_two_lags():
    with pytest.raises(ValueError):
        hurst_exponent(np.arange(4.0))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_hurst_and_half_life_are_invariant_to_affine_maps(seed, scale, shift):
    spread = ar1(seed, 400, phi=0.9)
    assert hurst_exponent(scale * spread + shift) == pytest.approx(hurst_exponent(spread), abs=1e-9)
    assert half_life(scale * spread + shift) == pytest.approx(half_life(spread), rel=1e-9)


def test_mean_crossings_exact_cases():
    assert mean_crossings(np.array([2.0, 0.0, 2.0, 0.0])) == 3
    # Deviations -1, 0, 1, 0, -1, 0, 1: passing through the mean counts once per pass.
    assert mean_crossings(np.array([0.0, 1, 2, 1, 0, 1, 2])) == 3
    # Touching the mean and turning back is not a crossing; leading touches are ignored.
    assert mean_crossings(np.array([0.0, -1, 0, -1, 2])) == 1
    assert mean_crossings(np.full(5, 1.0)) == 0


def test_mean_crossings_vectorised_equals_columnwise():
    spreads = np.column_stack([ar1(seed, 300, 0.7) for seed in range(5)])
    counts = mean_crossings(spreads)
    assert counts.tolist() == [mean_crossings(spreads[:, column]) for column in range(5)]


def test_zscore():
    spread = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    expected = (10.0 - 4.0) / np.std(spread, ddof=1)
    assert zscore(spread) == pytest.approx(expected)
    assert zscore(spread, ddof=0) == pytest.approx((10.0 - 4.0) / np.std(spread))


def test_return_correlation_matches_numpy():
    log_prices = np.cumsum(np.random.default_rng(3).normal(size=(500, 4)), axis=0)
    log_prices[:, 1] += 0.5 * log_prices[:, 0]
    correlation = return_correlation(log_prices, np.array([1, 2, 0]), np.array([0, 3, 0]))
    returns = np.diff(log_prices, axis=0)
    expected = [np.corrcoef(returns[:, y], returns[:, x])[0, 1] for y, x in ((1, 0), (2, 3), (0, 0))]
    np.testing.assert_allclose(correlation, expected, rtol=1e-12)


def test_spread_statistics_on_real_pairs():
    log_prices = load_real_log_prices(n_symbols=8)
    screen = engle_granger_batch(log_prices)
    stats = spread_statistics(
        log_prices, screen.y_index, screen.x_index, screen.hedge_ratio, screen.intercept, block_size=9
    )
    spreads = pair_spreads(log_prices, screen.y_index, screen.x_index, screen.hedge_ratio, screen.intercept)
    # The Engle-Granger residual has mean zero by construction.
    np.testing.assert_allclose(stats.spread_mean, 0.0, atol=1e-10)
    np.testing.assert_allclose(stats.spread_std, spreads.std(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(stats.zscore, zscore(spreads), rtol=1e-12)
    np.testing.assert_allclose(stats.half_life, half_life(spreads), rtol=1e-12)
    np.testing.assert_allclose(stats.hurst, hurst_exponent(spreads), rtol=1e-12)
    np.testing.assert_array_equal(stats.mean_crossings, mean_crossings(spreads))
    np.testing.assert_allclose(stats.return_correlation, return_correlation(log_prices, screen.y_index, screen.x_index))
    # Stronger cointegration evidence goes with faster mean reversion.
    assert np.corrcoef(screen.adf_stat, np.log(stats.half_life))[0, 1] > 0.5
    for column in range(0, len(screen), 11):
        spread = spreads[:, column]
        fit = OLS(np.diff(spread), add_constant(spread[:-1])).fit()
        assert stats.half_life[column] == pytest.approx(-np.log(2) / np.log1p(fit.params[1]), rel=1e-9)
