"""Vectorised MacKinnon p-values and critical values against statsmodels.tsa.adfvalues."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp

from pairs.quant.mackinnon import mackinnon_critical_values, mackinnon_pvalue

REGRESSIONS = ("n", "c", "ct", "ctt")
# Dense grid over the fitted range plus both sides of every bound and tau_star.
STATISTICS = np.concatenate(
    (
        np.linspace(-30.0, 4.0, 3401),
        [-18.83, -18.86, -2.62, -1.61, 0.92, 2.74, -3.13, -np.inf, np.inf],
    )
)


@pytest.mark.parametrize("regression", REGRESSIONS)
@pytest.mark.parametrize("n_series", range(1, 7))
def test_pvalues_match_statsmodels(regression, n_series):
    with np.errstate(invalid="ignore"):  # statsmodels evaluates its polynomial at +-inf
        expected = np.array([mackinnonp(stat, regression=regression, N=n_series) for stat in STATISTICS])
    actual = mackinnon_pvalue(STATISTICS, regression, n_series)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-15)


def test_engle_granger_case_bounds():
    # N = 2 with a constant: p is 0 below tau_min, 1 above tau_max.
    np.testing.assert_array_equal(mackinnon_pvalue([-18.87, -np.inf, 0.93, np.inf], "c", 2), [0, 0, 1, 1])
    assert 0 < mackinnon_pvalue(-18.85, "c", 2) < 1e-6


def test_nan_statistic_gives_nan():
    assert np.isnan(mackinnon_pvalue(np.nan, "c", 2))


def test_scalar_and_shape_are_preserved():
    assert mackinnon_pvalue(-3.3, "c", 2).shape == ()
    assert mackinnon_pvalue(np.full((2, 3), -3.3), "c", 2).shape == (2, 3)


@settings(max_examples=200, deadline=None)
@given(low=st.floats(-25, 3), high=st.floats(-25, 3))
def test_pvalue_is_monotone_in_the_statistic(low, high):
    low, high = min(low, high), max(low, high)
    assert mackinnon_pvalue(low, "c", 2) <= mackinnon_pvalue(high, "c", 2)


@pytest.mark.parametrize(
    ("regression", "n_series"), [("n", 1), ("c", 1), ("c", 2), ("c", 3), ("ct", 1), ("ct", 2), ("ct", 3)]
)
@pytest.mark.parametrize("nobs", [25, 100, 1999, np.inf])
def test_critical_values_match_statsmodels(regression, n_series, nobs):
    expected = mackinnoncrit(N=n_series, regression=regression, nobs=nobs)
    actual = mackinnon_critical_values(regression, n_series, nobs)
    np.testing.assert_allclose(actual, expected, rtol=1e-15)


def test_invalid_cases_are_rejected():
    with pytest.raises(ValueError):
        mackinnon_pvalue(-3.0, "x", 1)
    with pytest.raises(ValueError):
        mackinnon_pvalue(-3.0, "c", 7)
    with pytest.raises(ValueError):
        mackinnon_critical_values("n", 2)
    with pytest.raises(ValueError):
        mackinnon_critical_values("ctt", 1)


def test_the_erfc_loop_and_scipy_give_the_same_pvalues(monkeypatch):
    """Small arrays take the normal CDF from math.erfc (no scipy import), large ones from scipy's ndtr (#18)."""
    import pairs.quant.mackinnon as mackinnon

    looped = mackinnon_pvalue(STATISTICS, "c", 2)
    monkeypatch.setattr(mackinnon, "_ERFC_LOOP_MAX", 0)
    np.testing.assert_allclose(mackinnon_pvalue(STATISTICS, "c", 2), looped, rtol=0, atol=1e-15)
    assert mackinnon_pvalue(np.array(-2.0), "c", 2).shape == ()
