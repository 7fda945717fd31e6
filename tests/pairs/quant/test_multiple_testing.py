"""Benjamini-Hochberg q-values against statsmodels' multipletests(method="fdr_bh")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from pairs.quant.multiple_testing import benjamini_hochberg

pvalue_lists = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=300)


def statsmodels_qvalues(pvalues) -> np.ndarray:
    return multipletests(np.asarray(pvalues, dtype=float), method="fdr_bh")[1]


@pytest.mark.parametrize("seed", range(5))
def test_matches_statsmodels_exactly(seed):
    rng = np.random.default_rng(seed)
    # A mix of true effects (small p), nulls (uniform) and ties.
    pvalues = np.concatenate(
        (rng.uniform(0, 1e-4, 50), rng.uniform(size=2000), np.repeat(rng.uniform(size=5), 20), [0.0, 1.0, 1.0])
    )
    rng.shuffle(pvalues)
    np.testing.assert_array_equal(benjamini_hochberg(pvalues), statsmodels_qvalues(pvalues))


def test_textbook_example():
    # m = 4: raw p * m / rank = [0.04, 0.04, 0.04, 0.8]; the step-up minimum keeps them.
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.02, 0.03, 0.8]), [0.04, 0.04, 0.04, 0.8])
    # A later smaller ratio pulls earlier q-values down: 0.03*3/2 = 0.045 > 0.04 = 0.04*3/3.
    np.testing.assert_allclose(benjamini_hochberg([0.04, 0.03, 0.001]), [0.04, 0.04, 0.003])


def test_nan_pvalues_are_left_out_of_the_family():
    qvalues = benjamini_hochberg([0.01, np.nan, 0.02])
    assert np.isnan(qvalues[1])
    np.testing.assert_allclose(qvalues[[0, 2]], statsmodels_qvalues([0.01, 0.02]))


def test_empty_and_all_nan():
    assert benjamini_hochberg([]).shape == (0,)
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()


def test_rejects_2d_input():
    with pytest.raises(ValueError):
        benjamini_hochberg(np.zeros((2, 2)))


@settings(max_examples=200, deadline=None)
@given(pvalues=pvalue_lists)
def test_qvalues_are_bounded_and_monotone(pvalues):
    pvalues = np.asarray(pvalues)
    qvalues = benjamini_hochberg(pvalues)
    assert (qvalues >= pvalues).all()
    assert (qvalues <= 1.0).all()
    order = np.argsort(pvalues, kind="stable")
    assert (np.diff(qvalues[order]) >= 0).all()
    # Equal p-values get equal q-values.
    for value in np.unique(pvalues):
        assert len(np.unique(qvalues[pvalues == value])) == 1


@settings(max_examples=200, deadline=None)
@given(pvalues=pvalue_lists)
def test_property_matches_statsmodels(pvalues):
    np.testing.assert_array_equal(benjamini_hochberg(pvalues), statsmodels_qvalues(pvalues))
