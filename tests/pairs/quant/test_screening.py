"""The batched universe screen (pairs.quant.screening) against statsmodels and the direct spread statistics.

Pure numerics, no database: synthetic log prices made of independent random walks plus constructed
cointegrated pairs ``y = a + b x + AR(1) noise``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from statsmodels.regression.linear_model import OLS
from statsmodels.tools import add_constant
from statsmodels.tsa.stattools import adfuller, coint

from pairs.quant import spread as spread_stats
from pairs.quant.cointegration import all_ordered_pairs
from pairs.quant.multiple_testing import benjamini_hochberg
from pairs.quant.screening import (
    ScreenResult,
    add_series_statistics,
    confirm_out_of_sample,
    family_pvalues,
    merge_and_adjust,
    passing_directions,
    preferred_directions,
    reverse_tested,
    screen,
    split_pairs,
)

N_BARS = 1000
N_WALKS = 4
THRESHOLD = 0.05
# (intercept, hedge ratio, AR(1) coefficient, noise sd, index of the walk it is built on)
CONSTRUCTED = [(0.3, 1.2, 0.9, 0.01, 0), (-1.0, 0.7, 0.8, 0.005, 1)]


def ar1_noise(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    shocks = rng.normal(0.0, sd, n)
    noise = np.zeros(n)
    for t in range(1, n):
        noise[t] = phi * noise[t - 1] + shocks[t]
    return noise


def synthetic_log_prices(seed: int = 7, n_bars: int = N_BARS) -> np.ndarray:
    """Columns 0..3: independent random walks; 4 and 5: cointegrated with walks 0 and 1."""
    rng = np.random.default_rng(seed)
    walks = np.cumsum(rng.normal(0.0, 0.01, size=(n_bars, N_WALKS)), axis=0) + np.log([100.0, 20.0, 3.0, 0.5])
    constructed = [a + b * walks[:, leg] + ar1_noise(rng, n_bars, phi, sd) for a, b, phi, sd, leg in CONSTRUCTED]
    return np.column_stack([walks, *constructed])


def statsmodels_reference(y: np.ndarray, x: np.ndarray) -> dict:
    """coint(y, x, trend="c", autolag="aic") plus the pair regression and adfuller's lag on its residual."""
    stat, pvalue, _ = coint(y, x, trend="c", autolag="aic")
    fit = OLS(y, add_constant(x, prepend=False)).fit()
    adf = adfuller(fit.resid, autolag="aic", regression="n", result_object=True)
    return {"adf_stat": float(stat), "pvalue": float(pvalue), "lag": int(adf.lags),
            "hedge_ratio": float(fit.params[0]), "intercept": float(fit.params[1]),
            "resid_adf_stat": float(adf.statistic)}


def _references(log_prices: np.ndarray, pairs: list[tuple[int, int]]) -> list[dict]:
    return [statsmodels_reference(log_prices[:, y], log_prices[:, x]) for y, x in pairs]


def statsmodels_references(log_prices: np.ndarray, pairs) -> list[dict]:
    """``statsmodels_reference`` for every (y, x) column pair, in a few processes with one BLAS thread each.

    statsmodels is slow here, and with threaded BLAS on a busy machine one coint call on 1000 bars takes ~10x
    longer. Shared with the database tests; it lives in this module because the worker processes import it and
    must not import Django.
    """
    pairs = [(int(y), int(x)) for y, x in pairs]
    n_workers = max(1, min(os.cpu_count() or 1, 4))
    chunks = [pairs[k::n_workers] for k in range(n_workers)]
    values = np.asarray(log_prices, dtype=np.float64)
    saved = dict(os.environ)
    # The spawned processes read these when they load numpy's BLAS.
    os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    try:
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_references, [values] * n_workers, chunks))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    by_pair = {pair: ref for chunk, part in zip(chunks, parts, strict=True) for pair, ref in zip(chunk, part,
                                                                                                 strict=True)}
    return [by_pair[pair] for pair in pairs]


@pytest.fixture(scope="module")
def log_prices() -> np.ndarray:
    return synthetic_log_prices()


@pytest.fixture(scope="module")
def result(log_prices) -> ScreenResult:
    return screen(log_prices, series_pvalue_threshold=THRESHOLD)


def test_every_direction_is_screened_once(log_prices, result):
    n = log_prices.shape[1]
    assert len(result) == n * (n - 1)
    np.testing.assert_array_equal(np.column_stack([result.y_index, result.x_index]), all_ordered_pairs(n))
    assert result.qvalue is None  # q-values belong to the whole run, set by merge_and_adjust


def test_engle_granger_equals_statsmodels_for_every_direction(log_prices, result):
    references = statsmodels_references(log_prices, zip(result.y_index, result.x_index, strict=True))
    for k, ref in enumerate(references):
        where = f"direction {result.y_index[k]}~{result.x_index[k]}"
        assert result.pvalue[k] == pytest.approx(ref["pvalue"], rel=1e-9, abs=1e-15), where
        assert result.adf_stat[k] == pytest.approx(ref["adf_stat"], rel=1e-9), where
        assert result.adf_stat[k] == pytest.approx(ref["resid_adf_stat"], rel=1e-9), where
        assert result.lag[k] == ref["lag"], where
        assert result.hedge_ratio[k] == pytest.approx(ref["hedge_ratio"], rel=1e-9), where
        assert result.intercept[k] == pytest.approx(ref["intercept"], rel=1e-9, abs=1e-12), where


def test_constructed_pairs_are_strongly_cointegrated_and_independent_walks_are_not(log_prices, result):
    pvalue = {(int(y), int(x)): p for y, x, p in zip(result.y_index, result.x_index, result.pvalue, strict=True)}
    for offset, (_, hedge_ratio, _, _, leg) in enumerate(CONSTRUCTED):
        constructed = N_WALKS + offset
        assert pvalue[(constructed, leg)] < 1e-6
        k = np.flatnonzero((result.y_index == constructed) & (result.x_index == leg))[0]
        assert result.hedge_ratio[k] == pytest.approx(hedge_ratio, rel=0.1)
    walk_pvalues = [p for (y, x), p in pvalue.items() if y < N_WALKS and x < N_WALKS]
    assert np.median(walk_pvalues) > 0.1


def test_moment_statistics_equal_the_materialised_spreads(log_prices, result):
    spreads = spread_stats.pair_spreads(log_prices, result.y_index, result.x_index, result.hedge_ratio,
                                        result.intercept)
    # The OLS residual has mean 0: only rounding noise is left, so an absolute tolerance on it.
    np.testing.assert_allclose(result.spread_mean, spreads.mean(axis=0), rtol=1e-9, atol=1e-12)
    assert np.all(np.abs(result.spread_mean) < 1e-12)
    np.testing.assert_allclose(result.spread_std, spreads.std(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(result.zscore, spread_stats.zscore(spreads), rtol=1e-9)
    np.testing.assert_allclose(result.half_life, spread_stats.half_life(spreads), rtol=1e-9)
    np.testing.assert_allclose(
        result.return_correlation,
        spread_stats.return_correlation(log_prices, result.y_index, result.x_index),
        rtol=1e-9,
    )
    # Sanity of the values themselves: the constructed AR(0.9) / AR(0.8) spreads revert in a few bars.
    for offset, (_, _, phi, _, leg) in enumerate(CONSTRUCTED):
        k = np.flatnonzero((result.y_index == N_WALKS + offset) & (result.x_index == leg))[0]
        assert result.half_life[k] == pytest.approx(-math.log(2) / math.log(phi), rel=0.5)


def test_hurst_and_crossings_only_for_directions_under_the_threshold(log_prices, result):
    selected = result.pvalue <= THRESHOLD
    assert selected.any() and (~selected).any()  # the data exercises both branches
    assert np.all(np.isnan(result.hurst[~selected]))
    assert np.all(result.mean_crossings[~selected] == -1)
    spreads = spread_stats.pair_spreads(log_prices, result.y_index[selected], result.x_index[selected],
                                        result.hedge_ratio[selected], result.intercept[selected])
    np.testing.assert_allclose(result.hurst[selected], spread_stats.hurst_exponent(spreads), rtol=1e-9)
    np.testing.assert_array_equal(result.mean_crossings[selected], spread_stats.mean_crossings(spreads))
    assert np.all(result.hurst[selected] < 0.5)  # mean-reverting spreads
    assert np.all(result.mean_crossings[selected] > 0)


def test_threshold_changes_which_directions_get_series_statistics(log_prices):
    loose = screen(log_prices, series_pvalue_threshold=1.0)
    assert np.all(np.isfinite(loose.hurst))
    assert np.all(loose.mean_crossings >= 0)
    strict = screen(log_prices, series_pvalue_threshold=1e-6)
    assert np.isfinite(strict.hurst).sum() == (strict.pvalue <= 1e-6).sum() >= len(CONSTRUCTED)


def test_without_a_threshold_no_series_statistics_until_they_are_added(log_prices, result):
    bare = screen(log_prices)
    assert np.all(np.isnan(bare.hurst)) and np.all(bare.mean_crossings == -1)
    np.testing.assert_array_equal(bare.pvalue, result.pvalue)
    np.testing.assert_array_equal(bare.half_life, result.half_life)

    selected = np.flatnonzero(bare.pvalue <= THRESHOLD)
    add_series_statistics(bare, log_prices, selected)

    np.testing.assert_array_equal(bare.hurst, result.hurst)
    np.testing.assert_array_equal(bare.mean_crossings, result.mean_crossings)


def test_to_columns_and_from_columns_round_trip_nan_and_inf(result):
    original = merge_and_adjust([screen(synthetic_log_prices())])
    original.half_life[0] = np.inf
    original.half_life[1] = np.nan
    original.zscore[2] = -np.inf
    original.return_correlation[3] = np.nan
    original.hurst[4] = np.nan

    columns = original.to_columns()
    # Compact text: base64 of the 8-byte values (4 characters per 3 bytes), never a JSON list of numbers.
    assert all(isinstance(text, str) for text in columns.values())
    assert len(columns["half_life"]) == 4 * math.ceil(8 * len(original) / 3)
    # The Celery transport is JSON: go through it.
    restored = ScreenResult.from_columns(json.loads(json.dumps(columns)))

    for name in ScreenResult.__dataclass_fields__:
        before, after = getattr(original, name), getattr(restored, name)
        assert after.dtype == before.dtype, name
        np.testing.assert_array_equal(after, before, err_msg=name)  # NaN == NaN, inf == inf here
    assert restored.half_life[0] == np.inf
    assert np.isnan(restored.half_life[1])
    assert restored.zscore[2] == -np.inf


def test_round_trip_without_qvalues_keeps_none(result):
    columns = result.to_columns()
    assert "qvalue" not in columns
    restored = ScreenResult.from_columns(json.loads(json.dumps(columns)))
    assert restored.qvalue is None
    np.testing.assert_array_equal(restored.pvalue, result.pvalue)
    np.testing.assert_array_equal(restored.mean_crossings, result.mean_crossings)


@pytest.mark.parametrize("n_blocks", [2, 3, 7])
def test_merge_of_split_blocks_equals_one_block(log_prices, n_blocks):
    whole = merge_and_adjust([screen(log_prices, series_pvalue_threshold=THRESHOLD)])
    blocks = split_pairs(log_prices.shape[1], n_blocks)
    assert len(blocks) > 1
    parts = [screen(log_prices, block, series_pvalue_threshold=THRESHOLD) for block in blocks]
    # Through JSON, like the fanned-out blocks that come back from the workers.
    parts = [ScreenResult.from_columns(json.loads(json.dumps(p.to_columns()))) for p in parts]
    merged = merge_and_adjust(parts)
    # Blocks are tiles of symbol groups: same tests, another order.
    order = np.lexsort((merged.x_index, merged.y_index))
    merged = ScreenResult(**{name: None if values is None else values[order]
                             for name, values in vars(merged).items()})

    np.testing.assert_array_equal(merged.y_index, whole.y_index)
    np.testing.assert_array_equal(merged.x_index, whole.x_index)
    # A block's symbol products cover its own symbols and only the entries its pairs read: the sums agree with the
    # whole universe's to rounding, which a p-value far in the tail (1e-14) amplifies to a few 1e-12 relative.
    np.testing.assert_allclose(merged.qvalue, whole.qvalue, rtol=1e-10, atol=0)
    np.testing.assert_allclose(merged.pvalue, whole.pvalue, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(merged.lag, whole.lag)
    np.testing.assert_array_equal(merged.mean_crossings, whole.mean_crossings)
    np.testing.assert_allclose(merged.hurst, whole.hurst, rtol=1e-12)
    np.testing.assert_array_equal(merged.preferred, whole.preferred)
    # q-values are Benjamini-Hochberg over the preferred directions of the whole run, not per block, each with its
    # family p-value: both directions of every pair were tested, so twice the lower p-value (at most 1).
    kept = merged.preferred
    np.testing.assert_allclose(merged.family_pvalue, whole.family_pvalue, rtol=1e-10, atol=0)
    np.testing.assert_allclose(merged.family_pvalue[kept], np.minimum(1.0, 2 * whole.pvalue[kept]), rtol=1e-10)
    np.testing.assert_allclose(merged.qvalue[kept], benjamini_hochberg(np.minimum(1.0, 2 * whole.pvalue[kept])),
                               rtol=1e-10)
    assert np.isnan(merged.qvalue[~kept]).all() and np.isnan(merged.family_pvalue[~kept]).all()
    # (and not over both directions: each unordered pair is counted once)
    assert not np.allclose(merged.qvalue[kept], benjamini_hochberg(np.minimum(1.0, 2 * merged.pvalue))[kept])
    assert np.all(merged.qvalue[kept] >= merged.family_pvalue[kept] - 1e-15)


def test_q_values_follow_benjamini_hochberg_by_hand():
    pvalues = np.array([0.01, 0.04, 0.03, 0.2])
    part = ScreenResult(**{name: np.zeros(4) for name in ScreenResult.__dataclass_fields__
                           if name not in ("qvalue", "preferred", "family_pvalue")})
    part.pvalue = pvalues
    part.y_index, part.x_index = np.arange(4), np.arange(4, 8)  # four unordered pairs, one direction each
    merged = merge_and_adjust([part])
    # No reverse was tested: each direction enters the family with its own p-value.
    np.testing.assert_array_equal(merged.family_pvalue, pvalues)
    # sorted: 0.01, 0.03, 0.04, 0.2 -> p * m / rank = 0.04, 0.06, 0.0533, 0.2 -> monotone from the top
    np.testing.assert_allclose(merged.qvalue, [0.04, 0.05333333333333334, 0.05333333333333334, 0.2], rtol=1e-12)


def test_a_degenerate_test_is_left_out_of_the_family():
    """An exactly collinear pair (ADF -inf, p 0, no lag: statsmodels' convention) never passes, but its p of 0 took
    the first rank and counted in m: every other pair's q-value came out lower than the family without it."""
    pvalues = np.array([0.0, 0.01, 0.04, 0.03, 0.2])
    part = ScreenResult(**{name: np.zeros(5) for name in ScreenResult.__dataclass_fields__
                           if name not in ("qvalue", "preferred", "family_pvalue")})
    part.pvalue = pvalues
    part.y_index, part.x_index = np.arange(5), np.arange(5, 10)
    part.lag[0], part.adf_stat[0] = -1, -np.inf  # the collinear pair
    merged = merge_and_adjust([part])
    assert np.isnan(merged.qvalue[0]) and merged.family_pvalue[0] == 0.0
    np.testing.assert_allclose(merged.qvalue[1:], benjamini_hochberg(pvalues[1:]), rtol=1e-12)
    np.testing.assert_allclose(merged.qvalue[1:], [0.04, 0.05333333333333334, 0.05333333333333334, 0.2], rtol=1e-12)


@pytest.mark.parametrize(("n_symbols", "n_blocks"), [(2, 1), (2, 5), (5, 1), (5, 3), (7, 4), (12, 10), (6, 0),
                                                     (4, 100)])
def test_split_pairs_covers_every_ordered_pair_exactly_once(n_symbols, n_blocks):
    blocks = split_pairs(n_symbols, n_blocks)
    assert all(len(block) for block in blocks)
    # g symbol groups, a block for each unordered pair of groups and one within each group: about n_blocks blocks,
    # each touching the symbols of two groups only, and a block between two groups holds both directions.
    groups = max(1, min(n_symbols, math.ceil((math.sqrt(8 * max(1, n_blocks) + 1) - 1) / 2)))
    assert len(blocks) <= groups * (groups + 1) // 2
    assert max(len(np.unique(block)) for block in blocks) <= 2 * math.ceil(n_symbols / groups)
    for block in blocks:
        directions = {tuple(map(int, row)) for row in block}
        assert directions == {(x, y) for y, x in directions}
    flat = [tuple(map(int, row)) for block in blocks for row in block]
    assert len(flat) == n_symbols * (n_symbols - 1)
    assert len(set(flat)) == len(flat)
    expected = {(y, x) for y in range(n_symbols) for x in range(n_symbols) if y != x}
    assert set(flat) == expected


def test_confirm_out_of_sample_confirms_a_constructed_pair(log_prices):
    for offset, (_, hedge_ratio, _, _, leg) in enumerate(CONSTRUCTED):
        check = confirm_out_of_sample(log_prices[:, N_WALKS + offset], log_prices[:, leg], holdout_bars=250,
                                      max_pvalue=0.10)
        assert check.confirmed
        assert check.johansen_passed
        assert check.johansen_trace > check.johansen_critical_95
        assert check.holdout_pvalue < 0.01
        assert check.formation_hedge_ratio == pytest.approx(hedge_ratio, rel=0.1)
        # The formation fit is the OLS fit on the window without its held-out bars.
        fit = OLS(log_prices[:-250, N_WALKS + offset], add_constant(log_prices[:-250, leg], prepend=False)).fit()
        assert check.formation_hedge_ratio == pytest.approx(fit.params[0], rel=1e-9)
        assert check.formation_intercept == pytest.approx(fit.params[1], rel=1e-9, abs=1e-12)
        holdout = log_prices[-250:, N_WALKS + offset] - fit.params[1] - fit.params[0] * log_prices[-250:, leg]
        adf = adfuller(holdout, regression="c", autolag="AIC", result_object=True)
        assert check.holdout_pvalue == pytest.approx(adf.pvalue, rel=1e-6)


@pytest.mark.parametrize("seed", [100, 101, 102, 103, 104])
def test_confirm_out_of_sample_rejects_independent_random_walks(seed):
    walks = np.cumsum(np.random.default_rng(seed).normal(0.0, 0.01, size=(N_BARS, 2)), axis=0)
    check = confirm_out_of_sample(walks[:, 0], walks[:, 1], holdout_bars=250, max_pvalue=0.10)
    assert not check.confirmed
    assert not check.johansen_passed
    assert check.johansen_trace < check.johansen_critical_95


def test_confirmation_requires_both_the_holdout_and_johansen(log_prices):
    k = N_WALKS  # constructed pair on walk 0
    strict = confirm_out_of_sample(log_prices[:, k], log_prices[:, 0], holdout_bars=250, max_pvalue=1e-12)
    assert strict.johansen_passed and strict.holdout_pvalue > 1e-12
    assert not strict.confirmed


def test_one_direction_per_unordered_pair_by_the_documented_rule():
    # pairs {0, 1}: (1, 0) has the lower p; {0, 2}: equal p, (0, 2) the more negative ADF; {1, 2}: everything
    # equal, the lower y index (1, 2); {3, 4}: only (4, 3) was tested, so it is kept; {5, 6}: (5, 6) has a NaN p.
    y = np.array([0, 1, 0, 2, 1, 2, 4, 5, 6])
    x = np.array([1, 0, 2, 0, 2, 1, 3, 6, 5])
    pvalue = np.array([0.2, 0.01, 0.05, 0.05, 0.3, 0.3, 0.9, np.nan, 0.5])
    adf = np.array([-2.0, -4.0, -3.5, -3.0, -1.0, -1.0, -0.5, np.nan, -2.0])
    part = ScreenResult(**{name: np.zeros(len(y)) for name in ScreenResult.__dataclass_fields__
                           if name not in ("qvalue", "preferred", "family_pvalue")})
    part.y_index, part.x_index, part.pvalue, part.adf_stat = y, x, pvalue, adf
    assert preferred_directions(part).tolist() == [False, True, True, False, True, False, True, False, True]

    merged = merge_and_adjust([part])
    kept = merged.preferred
    # Benjamini-Hochberg over the five unordered pairs once each, with their family p-values: the lower p doubled
    # where both directions have one ({0, 1}: 0.02, {0, 2}: 0.10, {1, 2}: 0.6), the direction's own p where the
    # reverse was not tested ({3, 4}: 0.9) or has no p-value ({5, 6}: 0.5).
    np.testing.assert_allclose(merged.family_pvalue[kept], [0.02, 0.10, 0.6, 0.9, 0.5])
    np.testing.assert_allclose(merged.qvalue[kept], benjamini_hochberg(np.array([0.02, 0.10, 0.6, 0.9, 0.5])))
    assert np.isnan(merged.qvalue[~kept]).all() and np.isnan(merged.family_pvalue[~kept]).all()
    np.testing.assert_array_equal(merged.pvalue, pvalue)  # the raw Engle-Granger p-values are kept as they are
    # Through JSON and back, as fanned-out results travel.
    restored = ScreenResult.from_columns(json.loads(json.dumps(merged.to_columns())))
    assert restored.preferred.dtype == bool and restored.preferred.tolist() == kept.tolist()


def _hand_part(y, x, pvalue) -> ScreenResult:
    n = len(y)
    part = ScreenResult(**{name: np.zeros(n) for name in ScreenResult.__dataclass_fields__
                           if name not in ("qvalue", "preferred", "family_pvalue")})
    part.y_index, part.x_index, part.pvalue = np.asarray(y), np.asarray(x), np.asarray(pvalue, dtype=float)
    part.adf_stat, part.hedge_ratio, part.half_life = np.full(n, -3.0), np.ones(n), np.full(n, 20.0)
    return part


def test_a_pair_tested_both_ways_enters_the_family_with_twice_its_lower_p_value():
    # {0, 1} tested both ways (p 0.03 and 0.2), {2, 3} both ways (0.004, 0.7), {4, 5} one way only (0.03).
    part = _hand_part([0, 1, 2, 3, 4], [1, 0, 3, 2, 5], [0.03, 0.2, 0.004, 0.7, 0.03])
    assert reverse_tested(part).tolist() == [True, True, True, True, False]
    merged = merge_and_adjust([part])
    assert merged.preferred.tolist() == [True, False, True, False, True]
    np.testing.assert_allclose(merged.family_pvalue, [0.06, np.nan, 0.008, np.nan, 0.03])
    # Benjamini-Hochberg of the family p-values (0.06, 0.008, 0.03), not of the minima (0.03, 0.004, 0.03).
    np.testing.assert_allclose(merged.qvalue[merged.preferred], benjamini_hochberg(np.array([0.06, 0.008, 0.03])))
    np.testing.assert_allclose(merged.qvalue[merged.preferred], [0.06, 0.024, 0.045])
    np.testing.assert_array_equal(merged.pvalue, [0.03, 0.2, 0.004, 0.7, 0.03])  # raw p-values untouched
    # The thresholds read the family p-value: {0, 1}'s 0.03 would pass p <= 0.05, its family p-value 0.06 does not;
    # {4, 5}'s 0.03 (one direction, nothing chosen) does.
    passed, _ = passing_directions(merged, max_pvalue=0.05, max_qvalue=1.0, min_half_life=1, max_half_life=100)
    assert passed.tolist() == [False, False, True, False, True]
    passed, _ = passing_directions(merged, max_pvalue=1.0, max_qvalue=0.05, min_half_life=1, max_half_life=100)
    assert passed.tolist() == [False, False, True, False, True]
    # min(1, ...): a pair whose lower p-value is above one half enters with 1.
    assert family_pvalues(_hand_part([0, 1], [1, 0], [0.6, 0.8]), np.array([True, False]))[0] == 1.0


def test_on_independent_random_walks_the_selection_keeps_its_error_rates():
    """Under the null (no pair cointegrated), with the lower of two p-values the preferred direction passed p <= 0.05
    for about 9 % of pairs and BH at q 0.10 rejected something in about 18 % of universes; with the family p-value
    both rates are at most their level, within three standard errors of the simulation."""
    rng = np.random.default_rng(20261207)
    universes, n_walks, n_bars, alpha, q_level = 600, 8, 400, 0.05, 0.10
    passed_p = any_q = pairs = 0
    for _ in range(universes):
        walks = np.cumsum(rng.standard_normal((n_bars, n_walks)), axis=0)
        merged = merge_and_adjust([screen(walks)])
        by_p, _ = passing_directions(merged, max_pvalue=alpha, max_qvalue=1.0, min_half_life=0.0,
                                     max_half_life=np.inf)
        by_q, _ = passing_directions(merged, max_pvalue=1.0, max_qvalue=q_level, min_half_life=0.0,
                                     max_half_life=np.inf)
        passed_p += int(by_p.sum())
        any_q += bool(by_q.any())
        pairs += n_walks * (n_walks - 1) // 2
    # Per pair: P(family p <= alpha) <= alpha (16,800 pairs; pairs of one universe share walks, so the bound is
    # loose enough for that correlation).
    assert passed_p / pairs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / pairs)
    # Per universe (every null true: the false-discovery rate is the family-wise rate): P(any q <= 0.10) <= 0.10.
    assert any_q / universes <= q_level + 3 * math.sqrt(q_level * (1 - q_level) / universes)
