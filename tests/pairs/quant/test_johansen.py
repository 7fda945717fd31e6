"""Johansen trace test against statsmodels' coint_johansen on real and synthetic pairs."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.vector_ar.var_model import VAR
from statsmodels.tsa.vector_ar.vecm import coint_johansen

from pairs.quant.johansen import johansen_test, select_k_ar_diff
from tests.pairs.quant.test_cointegration import load_real_log_prices


@pytest.fixture(scope="module")
def real_log_prices() -> np.ndarray:
    return load_real_log_prices(n_symbols=12)


def real_pairs(n_symbols: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(n_symbols) for x in range(n_symbols) if y != x]


def assert_matches_statsmodels(system: np.ndarray, det_order: int, k_ar_diff: int) -> None:
    expected = coint_johansen(system, det_order, k_ar_diff)
    actual = johansen_test(system, det_order=det_order, k_ar_diff=k_ar_diff)
    np.testing.assert_allclose(actual.trace_stat, expected.lr1, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(actual.max_eig_stat, expected.lr2, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(actual.eigenvalues, expected.eig, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(actual.trace_critical_values, expected.cvt)
    np.testing.assert_array_equal(actual.max_eig_critical_values, expected.cvm)
    leading = expected.evec[:, 0] / expected.evec[0, 0]
    np.testing.assert_allclose(actual.cointegrating_vector, leading, rtol=1e-6)
    assert actual.nobs == expected.rkt.shape[0]


@pytest.mark.parametrize("k_ar_diff", [0, 1, 2, 6])
def test_real_pairs_match_statsmodels_constant(real_log_prices, k_ar_diff):
    for y, x in real_pairs(real_log_prices.shape[1]):
        assert_matches_statsmodels(real_log_prices[:, [y, x]], 0, k_ar_diff)


@pytest.mark.parametrize("det_order", [-1, 1])
def test_real_pairs_match_statsmodels_other_deterministic_terms(real_log_prices, det_order):
    for y, x in real_pairs(6):
        assert_matches_statsmodels(real_log_prices[:, [y, x]], det_order, 2)


def test_cointegrated_system_has_rank_one():
    rng = np.random.default_rng(0)
    common = np.cumsum(rng.normal(size=1000))
    noise = np.empty(1000)
    noise[0] = 0.0
    for t in range(1, 1000):
        noise[t] = 0.6 * noise[t - 1] + rng.normal()
    system = np.column_stack((2.0 + 0.8 * common + noise, common))
    result = johansen_test(system, k_ar_diff=1)
    assert result.trace_rank() == 1
    assert result.trace_stat[0] > result.trace_critical_values[0, 2]
    # The cointegrating vector recovers y - 0.8 x.
    assert result.cointegrating_vector[1] == pytest.approx(-0.8, abs=0.02)
    assert_matches_statsmodels(system, 0, 1)


def test_independent_random_walks_have_rank_zero():
    system = np.cumsum(np.random.default_rng(1).normal(size=(1000, 2)), axis=0)
    result = johansen_test(system, k_ar_diff=1)
    assert result.trace_rank() == 0
    assert_matches_statsmodels(system, 0, 1)


def test_trace_rank_significance_levels():
    system = np.cumsum(np.random.default_rng(2).normal(size=(500, 2)), axis=0)
    result = johansen_test(system, k_ar_diff=0)
    for level in (0.10, 0.05, 0.01):
        assert result.trace_rank(level) in (0, 1, 2)
    with pytest.raises(ValueError):
        result.trace_rank(0.2)


def test_selected_k_ar_diff_is_the_var_aic_choice(real_log_prices):
    for y, x in real_pairs(real_log_prices.shape[1])[::5]:
        system = real_log_prices[:, [y, x]]
        # VAR lag order p = k_ar_diff + 1; p = 0 is not a VECM candidate.
        aic = VAR(system).select_order(13, trend="c").ics["aic"][1:]
        assert select_k_ar_diff(system, 12) == int(np.argmin(aic))


def test_default_k_ar_diff_uses_the_selection(real_log_prices):
    system = real_log_prices[:, [0, 1]]
    chosen = select_k_ar_diff(system)
    result = johansen_test(system)
    assert result.k_ar_diff == chosen
    assert_matches_statsmodels(system, 0, chosen)


def test_invalid_input_is_rejected():
    system = np.cumsum(np.random.default_rng(3).normal(size=(50, 3)), axis=0)
    with pytest.raises(ValueError):
        johansen_test(system, k_ar_diff=1)
    with pytest.raises(ValueError):
        johansen_test(system[:, :2], det_order=2, k_ar_diff=1)
    with pytest.raises(ValueError):
        johansen_test(system[:10, :2], k_ar_diff=5)
    with pytest.raises(ValueError):
        johansen_test(np.where(np.arange(50)[:, None] == 3, np.nan, system[:, :2]), k_ar_diff=1)
