"""Batched Engle-Granger screen against statsmodels' coint/adfuller (tests only import statsmodels)."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.stattools import adfuller, coint
from statsmodels.tsa.tsatools import add_trend

from pairs.quant import cointegration
from pairs.quant.cointegration import (
    all_ordered_pairs,
    default_maxlag,
    engle_granger_batch,
    engle_granger_single,
)

DATA_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "binance-usdt-1h-2021"
N_REAL_SYMBOLS = 30
N_REAL_BARS = 2000
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def load_real_log_prices(n_symbols: int = N_REAL_SYMBOLS, n_bars: int = N_REAL_BARS) -> np.ndarray:
    """Last ``n_bars`` hourly log closes of the first ``n_symbols`` full-history symbols.

    The files share a few missing hours; every series is put on the full hourly
    grid and forward-filled. Read in place, never copied into the repo. Skips
    the test when the data is absent, fails instead when CI=true.
    """
    if not DATA_DIR.is_dir():
        message = f"real price data not found at {DATA_DIR.resolve()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    closes = {}
    for path in sorted(DATA_DIR.glob("*.csv.gz")):
        frame = pd.read_csv(path, usecols=["timestamp", "close"])
        closes[path.name.split(".")[0]] = pd.Series(
            frame["close"].to_numpy(), index=pd.to_datetime(frame["timestamp"], unit="ms")
        )
    first_bar = min(series.index[0] for series in closes.values())
    last_bar = max(series.index[-1] for series in closes.values())
    grid = pd.date_range(first_bar, last_bar, freq="h")
    full_history = [name for name, series in closes.items() if series.index[0] == first_bar]
    panel = pd.DataFrame({name: closes[name].reindex(grid).ffill() for name in full_history[:n_symbols]})
    return np.log(panel.to_numpy()[-n_bars:])


def statsmodels_engle_granger(y: np.ndarray, x: np.ndarray) -> tuple[float, float, int, int, float, float]:
    """coint(y, x, trend="c", autolag="aic") split into its steps, to also get adfuller's lag.

    Same calls as coint makes (OLS on add_trend(x, "c", prepend=False), adfuller
    on the residual with regression="n", mackinnonp(N=2)); test_decomposition_is_coint
    checks that the statistic and p-value are bit-identical to coint's.
    Returns (stat, pvalue, lag, nobs, hedge_ratio, intercept).
    """
    pair_fit = OLS(y, add_trend(x[:, None], trend="c", prepend=False)).fit()
    adf = adfuller(pair_fit.resid, autolag="aic", regression="n", result_object=True)
    pvalue = mackinnonp(adf.statistic, regression="c", N=2)
    hedge_ratio, intercept = pair_fit.params
    return adf.statistic, pvalue, adf.lags, adf.nobs, hedge_ratio, intercept


def _reference_for_pairs(log_prices: np.ndarray, pairs: np.ndarray) -> list[tuple]:
    return [statsmodels_engle_granger(log_prices[:, y], log_prices[:, x]) for y, x in pairs]


def reference_results(log_prices: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """statsmodels results for many pairs, spread over the available cores (it is slow)."""
    n_workers = max(1, min(os.cpu_count() or 1, 8))
    chunks = np.array_split(pairs, n_workers * 4)
    # One BLAS thread per worker process; the workers read this when they import numpy.
    saved_environment = dict(os.environ)
    os.environ.update({name: "1" for name in BLAS_THREAD_VARIABLES})
    try:
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = pool.map(_reference_for_pairs, [log_prices] * len(chunks), chunks)
            rows = [row for part in parts for row in part]
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)
    return np.array(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def real_log_prices() -> np.ndarray:
    return load_real_log_prices()


@pytest.fixture(scope="module")
def real_screen(real_log_prices):
    pairs = all_ordered_pairs(real_log_prices.shape[1])
    # A small block size exercises many blocks, including a ragged last one.
    batch = engle_granger_batch(real_log_prices, pairs, block_size=97)
    return pairs, batch, reference_results(real_log_prices, pairs)


def random_walks(seed: int, n_obs: int, n_series: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n_obs, n_series)), axis=0)


def ar1_noise(seed: int, n_obs: int, phi: float, scale: float) -> np.ndarray:
    shocks = np.random.default_rng(seed).normal(scale=scale, size=n_obs)
    noise = np.empty(n_obs)
    noise[0] = shocks[0]
    for t in range(1, n_obs):
        noise[t] = phi * noise[t - 1] + shocks[t]
    return noise


def test_real_pairs_match_statsmodels(real_screen):
    pairs, batch, reference = real_screen
    stat, pvalue, lag, nobs, hedge_ratio, intercept = reference.T
    assert len(batch) == len(pairs) == N_REAL_SYMBOLS * (N_REAL_SYMBOLS - 1)
    np.testing.assert_array_equal(batch.y_index, pairs[:, 0])
    np.testing.assert_array_equal(batch.x_index, pairs[:, 1])
    np.testing.assert_array_equal(batch.lag, lag.astype(int))
    np.testing.assert_array_equal(batch.nobs, nobs.astype(int))
    np.testing.assert_allclose(batch.adf_stat, stat, rtol=1e-8, atol=0)
    np.testing.assert_allclose(batch.pvalue, pvalue, rtol=0, atol=1e-9)
    np.testing.assert_allclose(batch.hedge_ratio, hedge_ratio, rtol=1e-9)
    np.testing.assert_allclose(batch.intercept, intercept, rtol=1e-9, atol=1e-9)
    # The real sample must exercise the interesting range, not only one regime.
    assert (batch.pvalue < 0.05).any() and (batch.pvalue > 0.5).any()
    assert len(np.unique(batch.lag)) > 3


def test_decomposition_is_coint(real_log_prices):
    """The step-by-step reference used above gives exactly coint's numbers."""
    for y, x in all_ordered_pairs(real_log_prices.shape[1])[::58]:
        stat, pvalue, *_ = statsmodels_engle_granger(real_log_prices[:, y], real_log_prices[:, x])
        result = coint(real_log_prices[:, y], real_log_prices[:, x], trend="c", autolag="aic")
        assert stat == result[0]
        assert pvalue == result[1]


def test_critical_values_are_coints(real_log_prices):
    batch = engle_granger_batch(real_log_prices, [(0, 1)])
    result = coint(real_log_prices[:, 0], real_log_prices[:, 1], trend="c", autolag="aic")
    np.testing.assert_allclose(batch.critical_values, result[2], rtol=1e-12)
    assert batch.maxlag == default_maxlag(N_REAL_BARS) == 26


def test_single_path_agrees_with_batch_on_real_pairs(real_log_prices):
    pairs = all_ordered_pairs(real_log_prices.shape[1])[::7]
    batch = engle_granger_batch(real_log_prices, pairs)
    for index, (y, x) in enumerate(pairs):
        single = engle_granger_single(real_log_prices[:, y], real_log_prices[:, x])
        assert single.lag == batch.lag[index]
        assert single.nobs == batch.nobs[index]
        assert single.adf_stat == pytest.approx(batch.adf_stat[index], rel=1e-9)
        assert single.pvalue == pytest.approx(batch.pvalue[index], abs=1e-10)
        assert single.hedge_ratio == pytest.approx(batch.hedge_ratio[index], rel=1e-10)


def test_synthetic_cointegrated_pair_is_detected():
    n_obs = 2000
    x = random_walks(1, n_obs, 1)[:, 0]
    y = 0.5 + 1.7 * x + ar1_noise(2, n_obs, phi=0.5, scale=1.0)
    batch = engle_granger_batch(np.column_stack((y, x)), [(0, 1)])
    stat, pvalue, lag, nobs, _, intercept = statsmodels_engle_granger(y, x)
    assert batch.pvalue[0] < 1e-10
    assert batch.hedge_ratio[0] == pytest.approx(1.7, abs=0.01)
    assert batch.lag[0] == lag and batch.nobs[0] == nobs
    assert batch.adf_stat[0] == pytest.approx(stat, rel=1e-9)
    assert batch.pvalue[0] == pytest.approx(pvalue, abs=1e-12)
    assert batch.intercept[0] == pytest.approx(intercept, rel=1e-9)


def test_independent_random_walks_are_not_cointegrated():
    walks = random_walks(3, 1500, 4)
    batch = engle_granger_batch(walks)
    assert len(batch) == 12
    for index in range(len(batch)):
        stat, pvalue, lag, *_ = statsmodels_engle_granger(
            walks[:, batch.y_index[index]], walks[:, batch.x_index[index]]
        )
        assert batch.lag[index] == lag
        assert batch.adf_stat[index] == pytest.approx(stat, rel=1e-9)
        assert batch.pvalue[index] == pytest.approx(pvalue, abs=1e-12)


def test_rejection_rates_have_the_right_size_and_power():
    """200 independent non-cointegrated pairs reject at about the nominal 5 %; cointegrated ones almost always."""
    n_obs, n_pairs = 500, 200
    walks = random_walks(14, n_obs, 2 * n_pairs)
    independent = np.column_stack((np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2)))
    null_rate = np.mean(engle_granger_batch(walks, independent).pvalue < 0.05)
    # Binomial(200, 0.05) has sd 0.015: these bounds are about 3 sd wide.
    assert 0.005 <= null_rate <= 0.10

    noise = np.column_stack([ar1_noise(seed, n_obs, phi=0.9, scale=1.0) for seed in range(n_pairs)])
    cointegrated = np.concatenate((walks[:, :n_pairs], 1.3 * walks[:, :n_pairs] + noise), axis=1)
    tied = np.column_stack((np.arange(n_pairs, 2 * n_pairs), np.arange(n_pairs)))
    assert np.mean(engle_granger_batch(cointegrated, tied).pvalue < 0.05) > 0.9


@pytest.mark.parametrize("maxlag", [0, 1, 5, 13])
def test_explicit_maxlag_matches_statsmodels(maxlag):
    walks = random_walks(4, 400, 3)
    walks[:, 1] = walks[:, 0] + ar1_noise(5, 400, phi=0.8, scale=0.5)
    batch = engle_granger_batch(walks, maxlag=maxlag)
    assert batch.maxlag == maxlag
    for index in range(len(batch)):
        y, x = walks[:, batch.y_index[index]], walks[:, batch.x_index[index]]
        result = coint(y, x, trend="c", maxlag=maxlag, autolag="aic")
        resid = OLS(y, add_trend(x[:, None], "c", prepend=False)).fit().resid
        adf = adfuller(resid, maxlag=maxlag, regression="n", autolag="aic", result_object=True)
        assert batch.lag[index] == adf.lags <= maxlag
        assert batch.adf_stat[index] == pytest.approx(result[0], rel=1e-9)
        assert batch.pvalue[index] == pytest.approx(result[1], abs=1e-12)


@pytest.mark.parametrize("n_obs", [25, 41, 60, 101])
def test_short_series_use_the_capped_default_maxlag(n_obs):
    walks = random_walks(6, n_obs, 3)
    batch = engle_granger_batch(walks)
    assert batch.maxlag == default_maxlag(n_obs)
    for index in range(len(batch)):
        y, x = walks[:, batch.y_index[index]], walks[:, batch.x_index[index]]
        stat, _, lag, nobs, *_ = statsmodels_engle_granger(y, x)
        assert (batch.lag[index], batch.nobs[index]) == (lag, nobs)
        assert batch.adf_stat[index] == pytest.approx(stat, rel=1e-9)


def test_default_maxlag_is_adfullers():
    assert default_maxlag(2000) == 26
    assert default_maxlag(100) == 12
    assert default_maxlag(16) == 7  # capped at T // 2 - 1


def test_too_short_for_maxlag_is_rejected():
    # statsmodels would fit the largest lag with zero residual degrees of freedom.
    with pytest.raises(ValueError, match="too few"):
        engle_granger_batch(random_walks(13, 12, 2))


def test_collinear_pair_is_minus_infinity_like_statsmodels():
    x = random_walks(7, 300, 1)[:, 0]
    y = 2.0 + 3.0 * x
    batch = engle_granger_batch(np.column_stack((y, x)), [(0, 1), (0, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = coint(y, x, trend="c", autolag="aic")
    assert result[0] == -np.inf and result[1] == 0.0
    np.testing.assert_array_equal(batch.adf_stat, [-np.inf, -np.inf])
    np.testing.assert_array_equal(batch.pvalue, [0.0, 0.0])
    np.testing.assert_array_equal(batch.lag, [-1, -1])
    assert batch.hedge_ratio[0] == pytest.approx(3.0)
    assert batch.intercept[0] == pytest.approx(2.0)


def test_nearly_collinear_pair_takes_the_exact_path(monkeypatch):
    """1 - R^2 ~ 1e-5 would cost the Gram path digits; such pairs are recomputed on explicit designs."""
    x = random_walks(5, 500, 1)[:, 0]
    y = 1.0 + x + ar1_noise(15, 500, phi=0.5, scale=0.01)
    calls = []

    def counting_single(*args, **kwargs):
        calls.append(args)
        return engle_granger_single(*args, **kwargs)

    monkeypatch.setattr(cointegration, "engle_granger_single", counting_single)
    batch = engle_granger_batch(np.column_stack((y, x)), [(0, 1), (1, 0)])
    assert len(calls) == 2
    for index, (y_column, x_column) in enumerate(((y, x), (x, y))):
        stat, pvalue, lag, *_ = statsmodels_engle_granger(y_column, x_column)
        assert batch.lag[index] == lag
        assert batch.adf_stat[index] == pytest.approx(stat, rel=1e-10)
        assert batch.pvalue[index] == pytest.approx(pvalue, abs=1e-12)


def test_batched_cholesky_isolates_matrices_that_do_not_factorise():
    matrices = np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0]), 2 * np.eye(3)])
    factors, ok = cointegration._cholesky(matrices)
    np.testing.assert_array_equal(ok, [True, False, True])
    np.testing.assert_allclose(factors[2], np.sqrt(2) * np.eye(3))


def test_constant_leg_gives_nan():
    walks = random_walks(8, 200, 2)
    walks[:, 1] = 4.2
    batch = engle_granger_batch(walks)
    assert np.isnan(batch.adf_stat).all() and np.isnan(batch.pvalue).all()
    assert np.isnan(batch.hedge_ratio).all()
    np.testing.assert_array_equal(batch.lag, [-1, -1])
    np.testing.assert_array_equal(batch.nobs, [0, 0])


def test_block_size_does_not_change_results():
    walks = random_walks(9, 500, 6)
    walks[:, 2] = 0.3 * walks[:, 0] + ar1_noise(10, 500, phi=0.7, scale=0.3)
    reference = engle_granger_batch(walks)
    for block_size in (1, 7, 29, 10_000):
        other = engle_granger_batch(walks, block_size=block_size)
        np.testing.assert_array_equal(other.lag, reference.lag)
        np.testing.assert_allclose(other.adf_stat, reference.adf_stat, rtol=1e-12)


def test_pairs_argument_selects_and_orders_tests():
    walks = random_walks(11, 300, 5)
    pairs = np.array([(4, 0), (1, 3), (0, 4), (1, 3)])
    subset = engle_granger_batch(walks, pairs)
    everything = engle_granger_batch(walks)
    lookup = {(y, x): i for i, (y, x) in enumerate(zip(everything.y_index, everything.x_index, strict=True))}
    for index, (y, x) in enumerate(pairs):
        assert (subset.y_index[index], subset.x_index[index]) == (y, x)
        assert subset.adf_stat[index] == pytest.approx(everything.adf_stat[lookup[(y, x)]], rel=1e-12)
    # The two directions are different tests.
    assert subset.adf_stat[0] != pytest.approx(subset.adf_stat[2], rel=1e-6)


def test_all_ordered_pairs():
    pairs = all_ordered_pairs(3)
    np.testing.assert_array_equal(pairs, [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)])
    assert len(all_ordered_pairs(126)) == 15_750


def test_invalid_input_is_rejected():
    walks = random_walks(12, 100, 2)
    with pytest.raises(ValueError, match="finite"):
        engle_granger_batch(np.where(np.arange(100)[:, None] == 5, np.nan, walks))
    with pytest.raises(ValueError, match="maxlag"):
        engle_granger_batch(walks, maxlag=50)
    with pytest.raises(ValueError, match="indices"):
        engle_granger_batch(walks, [(0, 2)])
    with pytest.raises(ValueError, match="2-D"):
        engle_granger_batch(walks[:, 0])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.01, 100.0).flatmap(lambda v: st.sampled_from([v, -v])),
    shift=st.floats(-50.0, 50.0),
)
def test_statistic_is_invariant_to_affine_maps_of_x(seed, scale, shift):
    walks = random_walks(seed, 250, 2)
    walks[:, 0] = walks[:, 1] + ar1_noise(seed, 250, phi=0.9, scale=0.5)
    transformed = np.column_stack((walks[:, 0], scale * walks[:, 1] + shift))
    original = engle_granger_batch(walks, [(0, 1)])
    mapped = engle_granger_batch(transformed, [(0, 1)])
    assert mapped.lag[0] == original.lag[0]
    assert mapped.adf_stat[0] == pytest.approx(original.adf_stat[0], rel=1e-8)
    assert mapped.hedge_ratio[0] * scale == pytest.approx(original.hedge_ratio[0], rel=1e-8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 100.0), shift=st.floats(-50.0, 50.0))
def test_statistic_is_invariant_to_positive_affine_maps_of_y(seed, scale, shift):
    walks = random_walks(seed, 250, 2)
    transformed = np.column_stack((scale * walks[:, 0] + shift, walks[:, 1]))
    original = engle_granger_batch(walks, [(0, 1)])
    mapped = engle_granger_batch(transformed, [(0, 1)])
    assert mapped.lag[0] == original.lag[0]
    assert mapped.adf_stat[0] == pytest.approx(original.adf_stat[0], rel=1e-8)
    assert mapped.pvalue[0] == pytest.approx(original.pvalue[0], abs=1e-9)


def test_forked_processes_give_the_single_process_results(real_log_prices):
    """The pairs shared over forked processes (after the cross sums) give exactly one process's numbers, the
    exact path and the undefined pairs included."""
    prices = np.column_stack((real_log_prices[:, :12], np.full(len(real_log_prices), 0.5),
                              1.0 + real_log_prices[:, 0] + 1e-4 * ar1_noise(3, len(real_log_prices), 0.5, 1.0)))
    pairs = all_ordered_pairs(prices.shape[1])
    single = engle_granger_batch(prices, pairs, block_size=41)
    assert np.isnan(single.adf_stat).any()  # the constant leg
    for processes in (2, 3):
        forked = engle_granger_batch(prices, pairs, block_size=41, processes=processes)
        for name in ("y_index", "x_index", "hedge_ratio", "intercept", "adf_stat", "lag", "nobs", "pvalue"):
            np.testing.assert_array_equal(getattr(forked, name), getattr(single, name), err_msg=name)


def test_cross_sums_shared_by_forked_processes_and_the_lag_recurrence(real_log_prices, monkeypatch):
    """The level-change sums follow from the lag before (level_diff[j] = level_diff[j-1] + diff_diff[j-1] - an
    outer product) within rounding of one matrix product per lag; forked processes writing the products into shared
    memory give one process's sums bit for bit, and the screen on top of them its results."""
    prices = real_log_prices[:, :20]
    maxlag = default_maxlag(len(prices))
    single = cointegration._SymbolCrossSums.compute(prices, maxlag)
    centred, diffs, n_obs = single.centred, single.diffs, len(prices)
    direct = np.stack([centred[lag : n_obs - 1].T @ diffs[: n_obs - 1 - lag] for lag in range(maxlag + 1)])
    np.testing.assert_allclose(single.level_diff, direct, rtol=0, atol=1e-13 * np.abs(direct).max())
    for processes in (2, 3):
        shared = cointegration._SymbolCrossSums.compute(prices, maxlag, processes=processes)
        for name in ("level_full", "level", "level_diff", "diff_diff"):
            np.testing.assert_array_equal(getattr(shared, name), getattr(single, name), err_msg=name)
    monkeypatch.setattr(cointegration, "SHARED_SUMS_MIN_SYMBOLS", 2)
    pairs = all_ordered_pairs(prices.shape[1])
    forked = engle_granger_batch(prices, pairs, processes=2)
    alone = engle_granger_batch(prices, pairs)
    np.testing.assert_array_equal(forked.pvalue, alone.pvalue)
    np.testing.assert_array_equal(forked.lag, alone.lag)
