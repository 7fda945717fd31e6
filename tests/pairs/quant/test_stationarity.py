"""The batched fixed-lag ADF test against statsmodels' adfuller(x, maxlag=p, autolag=None, regression='c')."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.stattools import adfuller

from pairs.quant.stationarity import adf_fixed_lag

TOLERANCE = 1e-10


def reference(column: np.ndarray, lags: int) -> tuple[float, float]:
    result = adfuller(column, maxlag=lags, autolag=None, regression="c", result_object=True)
    assert result.lags == lags
    return float(result.statistic), float(result.pvalue)


def ar1(rng: np.random.Generator, n_bars: int, n_series: int, phi: float) -> np.ndarray:
    shocks = rng.standard_normal((n_bars, n_series))
    values = np.zeros_like(shocks)
    for t in range(1, n_bars):
        values[t] = phi * values[t - 1] + shocks[t]
    return values


def test_many_columns_at_once_match_statsmodels_for_each_lag():
    rng = np.random.default_rng(20210101)
    random_walks = np.cumsum(rng.standard_normal((600, 4)), axis=0) + 50.0
    stationary = ar1(rng, 600, 4, phi=0.8)
    near_unit_root = ar1(rng, 600, 2, phi=0.98)
    spreads = np.column_stack([random_walks, stationary, near_unit_root])
    for lags in (0, 1, 2, 3):
        statistic, pvalue = adf_fixed_lag(spreads, lags=lags)
        assert statistic.shape == pvalue.shape == (spreads.shape[1],)
        for k in range(spreads.shape[1]):
            expected_stat, expected_p = reference(spreads[:, k], lags)
            assert statistic[k] == pytest.approx(expected_stat, abs=TOLERANCE, rel=0), (lags, k)
            assert pvalue[k] == pytest.approx(expected_p, abs=TOLERANCE, rel=0), (lags, k)
        # The test tells the two kinds apart: random walks don't reject, AR(0.8) rejects hard.
        assert (pvalue[:4] > 0.01).all()
        assert (pvalue[4:8] < 1e-6).all()


def test_one_dimensional_input_is_one_column():
    rng = np.random.default_rng(7)
    series = ar1(rng, 300, 1, phi=0.5)[:, 0]
    statistic, pvalue = adf_fixed_lag(series, lags=2)
    expected_stat, expected_p = reference(series, 2)
    assert statistic.shape == (1,)
    assert statistic[0] == pytest.approx(expected_stat, abs=TOLERANCE, rel=0)
    assert pvalue[0] == pytest.approx(expected_p, abs=TOLERANCE, rel=0)


@pytest.mark.parametrize("lags", [0, 1, 3])
def test_constant_column_is_nan_and_leaves_the_others_exact(lags):
    rng = np.random.default_rng(11)
    good = np.cumsum(rng.standard_normal((400, 2)), axis=0)
    spreads = np.column_stack([good[:, 0], np.full(400, 0.25), good[:, 1]])
    statistic, pvalue = adf_fixed_lag(spreads, lags=lags)
    assert np.isnan(statistic[1]) and np.isnan(pvalue[1])
    for k in (0, 2):
        expected_stat, expected_p = reference(spreads[:, k], lags)
        assert statistic[k] == pytest.approx(expected_stat, abs=TOLERANCE, rel=0)
        assert pvalue[k] == pytest.approx(expected_p, abs=TOLERANCE, rel=0)


def test_all_columns_constant_gives_all_nan():
    statistic, pvalue = adf_fixed_lag(np.full((100, 3), 7.0), lags=1)
    assert np.isnan(statistic).all() and np.isnan(pvalue).all()


def test_too_few_bars_is_refused():
    with pytest.raises(ValueError, match="too few"):
        adf_fixed_lag(np.arange(6, dtype=float), lags=1)
