"""Evaluation statistics: the DSR paper's worked example, hand-computed CSCV cases, bootstrap properties."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import integrate, stats

from pairs.quant import evaluation
from pairs.quant.evaluation import (
    bootstrap_profit_factor_ci,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    profit_factor,
)
from pairs.quant.performance import sharpe_ratio, trade_metrics

PHI = NormalDist().cdf

# --- profit factor -------------------------------------------------------------------------------------------


def test_profit_factor_matches_trade_metrics():
    for pnls in ([2.0, -1.0, 3.0, -2.0, 0.0], [1.0, 1.0, 1.0, -5.0], [1.0, 2.0], [-1.0], [], [0.0, 0.0]):
        assert profit_factor(pnls) == trade_metrics(pnls).profit_factor
    assert profit_factor([2.0, -1.0, 3.0, -2.0]) == pytest.approx(5 / 3)
    assert profit_factor([1.0, 2.0]) == math.inf
    assert profit_factor([]) is None


def reference_bootstrap(pnls, n_resamples, confidence, seed):
    """The textbook loop-free version with one draw of all indices and np.quantile (finite values only)."""
    values = np.asarray(pnls, dtype=float)
    indices = np.random.default_rng(seed).integers(0, values.size, size=(n_resamples, values.size))
    samples = values[indices]
    factors = np.where(samples > 0, samples, 0).sum(axis=1) / -np.where(samples < 0, samples, 0).sum(axis=1)
    alpha = 1 - confidence
    return tuple(np.quantile(factors, [alpha / 2, 1 - alpha / 2]))


def test_bootstrap_matches_a_direct_computation():
    pnls = np.random.default_rng(5).normal(0.2, 1.0, 300)
    lower, upper = bootstrap_profit_factor_ci(pnls, n_resamples=3000, confidence=0.9, seed=11)
    expected = reference_bootstrap(pnls, 3000, 0.9, 11)
    assert (lower, upper) == pytest.approx(expected, rel=1e-12)
    assert lower < profit_factor(pnls) < upper


def test_bootstrap_does_not_depend_on_the_draw_block_size(monkeypatch):
    pnls = np.random.default_rng(6).normal(0.1, 1.0, 50)
    whole = bootstrap_profit_factor_ci(pnls, n_resamples=500, seed=3)
    monkeypatch.setattr(evaluation, "_BOOTSTRAP_BLOCK_ELEMENTS", 7 * 50 + 13)  # blocks of 7 resamples
    assert bootstrap_profit_factor_ci(pnls, n_resamples=500, seed=3) == whole


def test_bootstrap_is_deterministic_for_a_seed():
    pnls = np.random.default_rng(8).normal(0.1, 1.0, 40)
    first = bootstrap_profit_factor_ci(pnls, seed=1)
    assert bootstrap_profit_factor_ci(pnls, seed=1) == first
    assert bootstrap_profit_factor_ci(pnls, seed=2) != first


def test_bootstrap_interval_narrows_with_more_trades():
    rng = np.random.default_rng(9)
    few = bootstrap_profit_factor_ci(rng.normal(0.1, 1.0, 30))
    many = bootstrap_profit_factor_ci(rng.normal(0.1, 1.0, 3000))
    assert many[1] - many[0] < few[1] - few[0]


def test_bootstrap_upper_bound_is_inf_when_many_resamples_have_no_loss():
    # A resample of 3 trades misses the single loss with probability (2/3)^3 = 0.296 > 0.025: the 97.5th
    # percentile falls among the infinite profit factors. Drawing the loss three times (probability 1/27 = 0.037
    # > 0.025) gives a profit factor of 0, so the 2.5th percentile is 0.
    lower, upper = bootstrap_profit_factor_ci([5.0, 1.0, -1.0])
    assert upper == math.inf
    assert lower == 0.0


def test_bootstrap_edge_cases():
    assert bootstrap_profit_factor_ci([]) == (None, None)
    assert bootstrap_profit_factor_ci([3.0]) == (None, None)  # one trade: no interval
    assert bootstrap_profit_factor_ci([0.0, 0.0, 0.0]) == (None, None)  # no resample has a profit factor
    assert bootstrap_profit_factor_ci([1.0, 2.0, 0.5]) == (math.inf, math.inf)
    assert bootstrap_profit_factor_ci([-1.0, -2.0]) == (0.0, 0.0)
    # Some resamples are all zeros (probability (1/2)^4): they are left out, the others still give an interval.
    lower, upper = bootstrap_profit_factor_ci([0.0, -1.0, 0.0, 2.0], seed=4)
    assert lower is not None and upper is not None and lower <= upper


@pytest.mark.parametrize("kwargs", [{"confidence": 0.0}, {"confidence": 1.0}, {"n_resamples": 0}])
def test_bootstrap_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_profit_factor_ci([1.0, -1.0], **kwargs)


def test_bootstrap_rejects_non_finite_pnls():
    with pytest.raises(ValueError, match="finite"):
        bootstrap_profit_factor_ci([1.0, np.nan])


def test_percentile_helper_matches_numpy_on_finite_values_and_handles_inf():
    values = np.sort(np.random.default_rng(1).normal(size=101))
    for q in (0.0, 0.025, 0.5, 0.975, 1.0):
        assert evaluation._percentile(values, q) == pytest.approx(np.quantile(values, q), rel=1e-14)
    with_inf = np.array([1.0, 2.0, math.inf, math.inf])
    assert evaluation._percentile(with_inf, 0.9) == math.inf  # np.quantile gives NaN here
    assert evaluation._percentile(with_inf, 1 / 3) == 2.0  # exactly on a finite order statistic
    assert evaluation._percentile(with_inf, 0.5) == math.inf  # between 2 and +inf


# --- probabilistic and deflated Sharpe ratio ----------------------------------------------------------------


def test_dsr_reproduces_the_papers_numerical_example():
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", section "A numerical example".

    Inputs of the paper: the selected strategy's annualised SR = 2.5, N = 100 trials whose annualised Sharpe
    ratios have variance V[{SR_n}] = 1/2, T = 1250 daily observations (5 years of 250 days), skewness -3 and
    kurtosis 10 (raw). Converted to daily as the paper does: SR = 2.5 / sqrt(250) = 0.1581, V = 0.5 / 250.
    Published figures: SR0 = 0.1132 (non-annualised expected maximum SR of the 100 trials) and DSR = 0.9004.
    """
    sr_daily = 2.5 / math.sqrt(250)
    sr0 = expected_max_sharpe(0.5 / 250, 100)
    assert round(sr0, 4) == 0.1132
    dsr = probabilistic_sharpe_ratio(sr_daily, sr0, 1250, -3.0, 10.0)
    assert round(dsr, 4) == 0.9004
    # Leaving the SR annualised while the benchmark is daily is the mistake the conversion avoids: DSR ~ 1.
    assert probabilistic_sharpe_ratio(2.5, sr0, 1250, -3.0, 10.0) > 0.9999


def test_psr_against_a_direct_computation():
    # z = (0.1 - 0.05) sqrt(249) / sqrt(1 + 0.5 * 0.1 + (5 - 1) / 4 * 0.01) = 0.05 * 15.7797 / sqrt(1.06)
    z = 0.05 * math.sqrt(249) / math.sqrt(1.06)
    assert probabilistic_sharpe_ratio(0.1, 0.05, 250, -0.5, 5.0) == pytest.approx(PHI(z), rel=1e-12)
    # Normal returns (skew 0, kurtosis 3): the standard error is Lo's (2002) sqrt((1 + SR^2 / 2) / (T - 1)).
    z_normal = 0.2 / math.sqrt((1 + 0.2**2 / 2) / 99)
    assert probabilistic_sharpe_ratio(0.2, 0.0, 100, 0.0, 3.0) == pytest.approx(PHI(z_normal), rel=1e-12)
    assert probabilistic_sharpe_ratio(0.1, 0.1, 500, -1.0, 8.0) == 0.5


def test_psr_penalises_negative_skew_and_fat_tails():
    base = probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 250, -2.0, 3.0) < base
    assert probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 12.0) < base
    assert probabilistic_sharpe_ratio(0.1, 0.0, 1000, 0.0, 3.0) > base


def test_psr_is_calibrated_for_normal_returns():
    # With true SR equal to the benchmark, the PSR is (asymptotically) uniform: it exceeds 0.95 about 5% of times.
    rng = np.random.default_rng(12)
    n_paths, n_obs, true_sr = 4000, 500, 0.05
    returns = rng.normal(true_sr, 1.0, size=(n_paths, n_obs))
    sample_sr = returns.mean(axis=1) / returns.std(axis=1, ddof=1)
    psr = np.array([probabilistic_sharpe_ratio(sr, true_sr, n_obs, 0.0, 3.0) for sr in sample_sr])
    assert np.mean(psr > 0.95) == pytest.approx(0.05, abs=0.015)
    assert np.mean(psr > 0.5) == pytest.approx(0.5, abs=0.03)


def test_psr_edge_cases():
    with pytest.raises(ValueError, match="at least 2 observations"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0)
    # A two-point distribution attains kurtosis = 1 + skew^2; at SR = 2 / skew the estimate has no dispersion.
    assert probabilistic_sharpe_ratio(0.5, 0.0, 100, 4.0, 17.0) == 1.0
    assert probabilistic_sharpe_ratio(0.5, 0.6, 100, 4.0, 17.0) == 0.0


def exact_expected_max_of_normals(n: int) -> float:
    return integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -12, 12, limit=200)[0]


@pytest.mark.parametrize(("n_trials", "tolerance"), [(10, 0.03), (100, 0.01), (1000, 0.005)])
def test_expected_max_sharpe_approximates_the_expected_maximum_of_normals(n_trials, tolerance):
    assert expected_max_sharpe(1.0, n_trials) == pytest.approx(exact_expected_max_of_normals(n_trials), rel=tolerance)


def test_expected_max_sharpe_scales_with_the_standard_deviation_and_edge_cases():
    assert expected_max_sharpe(4.0, 50) == pytest.approx(2 * expected_max_sharpe(1.0, 50))
    assert expected_max_sharpe(0.0, 100) == 0.0  # zero variance across trials: no selection bias
    assert expected_max_sharpe(1.0, 1) == 0.0  # one trial: no selection
    with pytest.raises(ValueError):
        expected_max_sharpe(1.0, 0.5)
    with pytest.raises(ValueError):
        expected_max_sharpe(-1.0, 10)


def skewed_returns(seed: int = 0, n: int = 750) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.002 + 0.01 * rng.standard_normal(n) - 0.02 * rng.exponential(size=n) ** 2 * (rng.random(n) < 0.05)


def test_dsr_from_returns_matches_its_parts():
    returns = skewed_returns()
    trial_sharpes = np.random.default_rng(2).normal(0.0, 0.04, 30)
    sr = sharpe_ratio(returns, 1.0)
    skew = stats.skew(returns)
    kurtosis = stats.kurtosis(returns, fisher=False)
    sr0 = expected_max_sharpe(np.var(trial_sharpes, ddof=1), 30)
    expected = probabilistic_sharpe_ratio(sr, sr0, returns.size, skew, kurtosis)
    assert deflated_sharpe_ratio(returns, trial_sharpes=trial_sharpes) == pytest.approx(expected, rel=1e-12)
    assert skew < -1 and kurtosis > 5  # the non-normality the DSR corrects for is really there
    # The same selection given as its two numbers, and as annualised figures with periods_per_year.
    by_numbers = deflated_sharpe_ratio(returns, n_trials=30, sr_variance=float(np.var(trial_sharpes, ddof=1)))
    assert by_numbers == pytest.approx(expected, rel=1e-12)
    annualised = deflated_sharpe_ratio(returns, trial_sharpes=trial_sharpes * math.sqrt(365), periods_per_year=365)
    assert annualised == pytest.approx(expected, rel=1e-9)


def test_dsr_deflates_more_with_more_trials():
    returns = skewed_returns(1)
    undeflated = deflated_sharpe_ratio(returns, n_trials=1, sr_variance=0.002)
    assert undeflated == pytest.approx(
        probabilistic_sharpe_ratio(
            sharpe_ratio(returns, 1.0), 0.0, returns.size, stats.skew(returns), stats.kurtosis(returns, fisher=False)
        )
    )
    dsr_10 = deflated_sharpe_ratio(returns, n_trials=10, sr_variance=0.002)
    dsr_1000 = deflated_sharpe_ratio(returns, n_trials=1000, sr_variance=0.002)
    assert undeflated > dsr_10 > dsr_1000


def test_dsr_edge_cases():
    # Identical trial Sharpe ratios: zero variance, SR0 = 0, the DSR is the PSR against zero.
    returns = skewed_returns(3)
    assert deflated_sharpe_ratio(returns, trial_sharpes=[0.1, 0.1, 0.1]) == pytest.approx(
        deflated_sharpe_ratio(returns, n_trials=1, sr_variance=0.0)
    )
    # Undefined Sharpe ratio of the returns: None.
    assert deflated_sharpe_ratio([0.01, 0.01, 0.01], n_trials=5, sr_variance=0.1) is None
    assert deflated_sharpe_ratio([0.01], n_trials=5, sr_variance=0.1) is None
    assert deflated_sharpe_ratio([], n_trials=5, sr_variance=0.1) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_trials": 10},
        {"sr_variance": 0.1},
        {"trial_sharpes": [0.1, 0.2], "sr_variance": 0.1},
        {"trial_sharpes": [0.1]},
        {"trial_sharpes": [0.1, np.nan]},
        {"n_trials": 10, "sr_variance": 0.1, "periods_per_year": 0},
    ],
)
def test_dsr_rejects_an_incomplete_or_ambiguous_selection(kwargs):
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(skewed_returns(), **kwargs)


# --- probability of backtest overfitting ---------------------------------------------------------------------


def test_pbo_hand_computed_with_the_mean_metric():
    """T = 4 periods, S = 4 blocks of one row, N = 3 configurations A, B, C; metric: the mean of each half.

    Rows (A, B, C): t0 (2, 3, 1), t1 (0, 2, 3), t2 (2, 4, 2), t3 (3, 4, 5). Half sums (rank like the means):

    training   IS sums (A,B,C)  n*  test    OOS sums (A,B,C)  rank of n*  omega  lambda
    {0,1}      2, 5, 4          B   {2,3}   5, 8, 7           3           3/4    ln 3
    {0,2}      4, 7, 3          B   {1,3}   3, 6, 8           2           2/4    0
    {0,3}      5, 7, 6          B   {1,2}   2, 6, 5           3           3/4    ln 3
    {1,2}      2, 6, 5          B   {0,3}   5, 7, 6           3           3/4    ln 3
    {1,3}      3, 6, 8          C   {0,2}   4, 7, 3           1           1/4    -ln 3
    {2,3}      5, 8, 7          B   {0,1}   2, 5, 4           3           3/4    ln 3

    lambda <= 0 in 2 of 6 combinations (the median rank counts as overfit): PBO = 1/3.
    """
    performance = np.array([[2, 3, 1], [0, 2, 3], [2, 4, 2], [3, 4, 5]], dtype=float)
    result = probability_of_backtest_overfitting(performance, n_splits=4, metric=lambda rows: rows.mean(axis=0))
    ln3 = math.log(3)
    np.testing.assert_allclose(result.logits, [ln3, 0.0, ln3, ln3, -ln3, ln3], atol=1e-15)
    np.testing.assert_allclose(result.relative_ranks, [0.75, 0.5, 0.75, 0.75, 0.25, 0.75])
    np.testing.assert_array_equal(result.best_in_sample, [1, 1, 1, 1, 2, 1])
    np.testing.assert_allclose(result.in_sample_metric, [2.5, 3.5, 3.5, 3.0, 4.0, 4.0])
    np.testing.assert_allclose(result.out_of_sample_metric, [4.0, 3.0, 3.0, 3.5, 1.5, 2.5])
    assert result.pbo == pytest.approx(1 / 3)
    assert result.n_combinations == 6 and result.exhaustive and result.block_size == 1 and result.dropped_rows == 0


def test_pbo_hand_computed_with_the_default_sharpe():
    """T = 4, S = 2 blocks of two rows, N = 3; the Sharpe ratio of two values a, b is (a + b) / (sqrt(2) |a - b|).

    Columns A = (1, 3 | -1, 1), B = (0, 2 | 1, 3), C = (-1, 1 | 1, 2). Block Sharpe ratios:
    block 0: A 4/(2 sqrt 2) = sqrt 2, B 2/(2 sqrt 2) = 1/sqrt 2, C 0;  block 1: A 0, B sqrt 2, C 3/sqrt 2.
    Train on block 0: n* = A (sqrt 2), test on block 1: A is last (rank 1), omega 1/4, lambda = -ln 3.
    Train on block 1: n* = C (3/sqrt 2), test on block 0: C is last, omega 1/4, lambda = -ln 3. PBO = 1.
    """
    performance = np.array([[1, 0, -1], [3, 2, 1], [-1, 1, 1], [1, 3, 2]], dtype=float)
    result = probability_of_backtest_overfitting(performance, n_splits=2)
    np.testing.assert_allclose(result.logits, [-math.log(3), -math.log(3)])
    np.testing.assert_array_equal(result.best_in_sample, [0, 2])
    np.testing.assert_allclose(result.in_sample_metric, [math.sqrt(2), 3 / math.sqrt(2)])
    np.testing.assert_allclose(result.out_of_sample_metric, [0.0, 0.0], atol=1e-15)
    assert result.pbo == 1.0
    assert result.probability_of_loss == 0.0  # OOS Sharpe exactly 0 is not a loss


def test_pbo_of_pure_noise_is_about_one_half():
    # One data set's PBO is noisy (its combinations share the data); the average over 30 noise panels is not.
    rng = np.random.default_rng(42)
    pbos = [probability_of_backtest_overfitting(rng.normal(0, 0.01, size=(800, 20))).pbo for _ in range(30)]
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.1)


def test_pbo_with_one_real_edge_is_about_zero():
    rng = np.random.default_rng(7)
    performance = rng.normal(0, 0.01, size=(1000, 20))
    performance[:, 5] += 0.003  # per-period Sharpe 0.3 against 0 for the others
    result = probability_of_backtest_overfitting(performance)
    assert result.pbo < 0.05
    assert np.mean(result.best_in_sample == 5) > 0.95
    # Ranked first of 20 out of sample in most combinations: omega = 20/21, lambda = ln 20.
    assert np.median(result.logits) == pytest.approx(math.log(20))


def test_pbo_of_a_reversing_selection_is_about_one():
    # Each configuration's block means sum to zero over the 16 blocks: what it earns in the training half it gives
    # back in the test half, so the in-sample best is the out-of-sample worst.
    rng = np.random.default_rng(3)
    n_splits, n_configs, block_size = 16, 20, 60
    block_means = rng.normal(0, 0.01, size=(n_splits, n_configs))
    block_means -= block_means.mean(axis=0)
    performance = np.repeat(block_means, block_size, axis=0) + rng.normal(0, 0.01, size=(n_splits * block_size, 20))
    result = probability_of_backtest_overfitting(performance, n_splits=n_splits)
    assert result.pbo > 0.95
    assert result.n_combinations == math.comb(16, 8) == 12_870 and result.exhaustive


def test_default_metric_is_performance_sharpe_ratio():
    # The block-moment Sharpe ratios equal performance.sharpe_ratio on each half, so the default and the generic
    # callable path agree; the remainder rows (T mod S = 3) are dropped from the start.
    performance = np.random.default_rng(4).normal(0.001, 0.01, size=(203, 6))
    fast = probability_of_backtest_overfitting(performance, n_splits=8)
    slow = probability_of_backtest_overfitting(
        performance, n_splits=8, metric=lambda rows: np.array([sharpe_ratio(column, 1.0) for column in rows.T])
    )
    np.testing.assert_array_equal(fast.best_in_sample, slow.best_in_sample)
    np.testing.assert_allclose(fast.logits, slow.logits, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.in_sample_metric, slow.in_sample_metric, rtol=1e-10)
    np.testing.assert_allclose(fast.out_of_sample_metric, slow.out_of_sample_metric, rtol=1e-10)
    assert fast.dropped_rows == 3 and fast.block_size == 25
    # The first combination trains on blocks 0..3 = rows 3..102.
    first = np.array([sharpe_ratio(column, 1.0) for column in performance[3:103].T])
    assert fast.in_sample_metric[0] == pytest.approx(first.max())


def test_pbo_does_not_depend_on_the_block_of_combinations(monkeypatch):
    performance = np.random.default_rng(5).normal(size=(160, 7))
    whole = probability_of_backtest_overfitting(performance, n_splits=8)
    monkeypatch.setattr(evaluation, "_CSCV_BLOCK_ELEMENTS", 7 * 9)  # 9 combinations at a time
    parts = probability_of_backtest_overfitting(performance, n_splits=8)
    np.testing.assert_array_equal(whole.logits, parts.logits)


def test_combinations_are_symmetric_and_sampled_deterministically():
    members, exhaustive = evaluation._combination_members(6, 100, seed=0)
    assert exhaustive and members.shape == (20, 6) and (members.sum(axis=1) == 3).all()
    assert {tuple(row) for row in members} == {tuple(~row) for row in members}

    performance = np.random.default_rng(6).normal(size=(400, 10))
    sampled = probability_of_backtest_overfitting(performance, n_splits=20, max_combinations=1001, seed=9)
    assert not sampled.exhaustive and sampled.n_combinations == 1000  # 500 pairs of complements
    again = probability_of_backtest_overfitting(performance, n_splits=20, max_combinations=1001, seed=9)
    np.testing.assert_array_equal(sampled.logits, again.logits)
    members, _ = evaluation._combination_members(20, 1000, seed=9)
    rows = {tuple(row) for row in members}
    assert len(rows) == 1000 and rows == {tuple(~row) for row in members}
    assert (members.sum(axis=1) == 10).all()


def test_ties_and_undefined_metrics():
    # B duplicates A: equal in- and out-of-sample; A (first) is chosen and shares ranks 2-3 with B: omega 2.5/4.
    # C is constant: its Sharpe is undefined everywhere and ranks last.
    column = np.array([0.01, 0.03, -0.01, 0.02])
    performance = np.column_stack((column, column, np.full(4, 0.5)))
    result = probability_of_backtest_overfitting(performance, n_splits=2)
    np.testing.assert_array_equal(result.best_in_sample, [0, 0])
    np.testing.assert_allclose(result.relative_ranks, [2.5 / 4, 2.5 / 4])
    assert result.pbo == 0.0


@pytest.mark.parametrize(
    ("shape", "n_splits", "message"),
    [
        ((100, 5), 5, "even"),
        ((100, 5), 0, "even"),
        ((10, 5), 16, "at least n_splits"),
        ((100, 1), 4, "at least 2 configurations"),
        ((2, 3), 2, "at least 2 rows"),
        ((100,), 4, "2-dimensional"),
    ],
)
def test_pbo_rejects_invalid_inputs(shape, n_splits, message):
    with pytest.raises(ValueError, match=message):
        probability_of_backtest_overfitting(np.zeros(shape), n_splits=n_splits)


def test_pbo_rejects_non_finite_returns_and_a_bad_metric():
    performance = np.random.default_rng(0).normal(size=(40, 3))
    performance[5, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        probability_of_backtest_overfitting(performance, n_splits=4)
    with pytest.raises(ValueError, match="one value per configuration"):
        probability_of_backtest_overfitting(np.ones((40, 3)), n_splits=4, metric=lambda rows: rows.mean())


def test_hand_case_combinations_are_in_lexicographic_order():
    # The docstring tables above list combinations in itertools order; pin it.
    members, _ = evaluation._combination_members(4, 100, seed=0)
    assert [tuple(np.flatnonzero(row)) for row in members] == list(itertools.combinations(range(4), 2))
