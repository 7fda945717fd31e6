"""Evaluation statistics for walk-forward research: how much of a backtest's edge survives selection. Pure numpy/scipy.

- ``profit_factor`` and ``bootstrap_profit_factor_ci``: the profit factor of ``performance.trade_metrics`` and a
  percentile-bootstrap interval for it, resampling trades.
- ``probabilistic_sharpe_ratio``, ``expected_max_sharpe`` and ``deflated_sharpe_ratio``: Bailey & López de Prado,
  "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of
  Portfolio Management 40(5), 2014, pp. 94-107.
- ``probability_of_backtest_overfitting``: combinatorially symmetric cross-validation (CSCV) after Bailey, Borwein,
  López de Prado & Zhu, "The Probability of Backtest Overfitting", Journal of Computational Finance 20(4), 2017.

Units: every Sharpe ratio here is per period (mean over standard deviation of the returns as sampled, not
annualised) unless a ``periods_per_year`` argument says otherwise, because the PSR's standard error is stated in
the number of observations of that same sampling frequency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from pairs.quant.performance import sharpe_ratio, trade_metrics

EULER_MASCHERONI = 0.5772156649015329

# Bootstrap draws are made in blocks of at most this many trade indices, so memory stays bounded (32 MB of
# int64) whatever the trade count; numpy's Generator yields the same stream in blocks as in one call, so the
# result does not depend on the block size.
_BOOTSTRAP_BLOCK_ELEMENTS = 1 << 22
# CSCV metric matrices (combinations x configurations) are built in blocks of at most this many cells.
_CSCV_BLOCK_ELEMENTS = 1 << 21
# Combinations are encoded as bit masks of blocks in an int64 when they are sampled.
_MAX_SAMPLED_SPLITS = 62


# --- profit factor -------------------------------------------------------------------------------------------


def profit_factor(pnls: Sequence[float] | np.ndarray) -> float | None:
    """Gross profit over gross loss of closed trades, exactly as ``performance.trade_metrics`` defines it.

    +inf with wins and no losses; None with no trades (or only zero results: neither profit nor loss).
    """
    return trade_metrics(pnls).profit_factor


def _percentile(sorted_values: np.ndarray, q: float) -> float:
    """Linear-interpolation percentile (numpy's default, Hyndman & Fan type 7) that tolerates +inf values.

    ``np.quantile`` computes ``a + (b - a) t`` and returns NaN when both neighbours are +inf; here a point that
    falls on or next to an infinite order statistic is +inf, which is what the interpolation means.
    """
    position = (sorted_values.size - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, sorted_values.size - 1)
    fraction = position - lower
    low_value, high_value = float(sorted_values[lower]), float(sorted_values[upper])
    if fraction == 0 or low_value == high_value:
        return low_value
    return low_value + fraction * (high_value - low_value)


def bootstrap_profit_factor_ci(
    pnls: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap confidence interval of the profit factor, resampling trades with replacement.

    Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13: draw ``n_resamples`` samples of the
    n trades with replacement, compute the profit factor of each, and report the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles (linear interpolation) of those values. Trades are treated as
    exchangeable; serial dependence between trades is ignored.

    Infinite and undefined resamples:
    - a resample with wins and no losses has a profit factor of +inf and is kept: it is a legitimate, extreme
      value. A bound that falls among them is returned as ``math.inf`` (the caller serialises it, e.g. as
      ``"inf"`` or null), so with few losing trades the upper bound is often +inf;
    - a resample with neither wins nor losses (only zero results) has no profit factor and is left out; the
      percentiles are of the resamples that have one.

    Returns ``(None, None)`` with fewer than 2 trades (one trade resamples to itself: no interval) or when no
    resample has a profit factor. Deterministic for a given ``seed``; vectorised over resamples.
    """
    values = np.asarray(pnls, dtype=float)
    if values.ndim != 1:
        raise ValueError("pnls must be 1-dimensional")
    if not np.isfinite(values).all():
        raise ValueError("pnls must be finite")
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be strictly between 0 and 1")
    n_trades = values.size
    if n_trades < 2:
        return None, None

    gains = np.maximum(values, 0.0)
    losses = np.maximum(-values, 0.0)
    rng = np.random.default_rng(seed)
    block_rows = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // n_trades)
    gross_profit = np.empty(n_resamples)
    gross_loss = np.empty(n_resamples)
    for start in range(0, n_resamples, block_rows):
        stop = min(start + block_rows, n_resamples)
        indices = rng.integers(0, n_trades, size=(stop - start, n_trades))
        gross_profit[start:stop] = gains[indices].sum(axis=1)
        gross_loss[start:stop] = losses[indices].sum(axis=1)

    defined = (gross_loss > 0) | (gross_profit > 0)
    if not defined.any():
        return None, None
    with np.errstate(divide="ignore"):
        factors = np.where(gross_loss[defined] > 0, gross_profit[defined] / gross_loss[defined], math.inf)
    factors.sort()
    alpha = 1.0 - confidence
    return _percentile(factors, alpha / 2), _percentile(factors, 1.0 - alpha / 2)


# --- probabilistic and deflated Sharpe ratio ----------------------------------------------------------------


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark``, given an estimate ``sr`` (PSR).

    Bailey & López de Prado (2012, "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2)), as restated in
    the 2014 DSR paper::

        PSR = Z[ (sr - sr_benchmark) sqrt(n_obs - 1) / sqrt(1 - skew sr + (kurtosis - 1) / 4 sr^2) ]

    where Z is the standard normal CDF; the denominator is the asymptotic standard deviation of the estimated
    Sharpe ratio for non-normal iid returns (Mertens 2002). ``sr`` and ``sr_benchmark`` are per-period
    (non-annualised) Sharpe ratios of ``n_obs`` returns; ``skew`` is the returns' skewness and ``kurtosis`` their
    raw (non-excess) kurtosis: 3 for a normal distribution, not 0.

    The denominator cannot be negative for moments of a real sample (kurtosis >= 1 + skew^2); when it is zero
    (a two-point distribution at one particular Sharpe) the estimate has no dispersion and the PSR is 1, 0 or
    1/2 as ``sr`` is above, below or equal to the benchmark. Raises ValueError for ``n_obs < 2``.
    """
    if n_obs < 2:
        raise ValueError(f"the PSR needs at least 2 observations, got n_obs={n_obs}")
    variance_factor = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    excess = sr - sr_benchmark
    if variance_factor <= 0:
        return 1.0 if excess > 0 else 0.0 if excess < 0 else 0.5
    return float(norm.cdf(excess * math.sqrt(n_obs - 1) / math.sqrt(variance_factor)))


def expected_max_sharpe(sr_variance: float, n_trials: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates whose true Sharpe ratio is zero (SR0).

    Bailey & López de Prado (2014), the expected maximum under the null of no skill::

        SR0 = sqrt(V) ((1 - g) Z^-1[1 - 1/N] + g Z^-1[1 - 1/(N e)])

    with V = ``sr_variance`` (the variance of the trials' Sharpe ratios, in the units of the result), N =
    ``n_trials``, g the Euler-Mascheroni constant and Z^-1 the standard normal quantile. The approximation
    overstates the exact expectation by about 1% at N = 100 and 2.5% at N = 5-10. ``n_trials`` may be a
    fractional effective number of independent trials; one trial means no selection, SR0 = 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if sr_variance < 0:
        raise ValueError(f"sr_variance must be non-negative, got {sr_variance}")
    if n_trials == 1 or sr_variance == 0:
        return 0.0
    quantiles = (1.0 - EULER_MASCHERONI) * norm.ppf(1.0 - 1.0 / n_trials) + EULER_MASCHERONI * norm.ppf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return float(math.sqrt(sr_variance) * quantiles)


def _selection_inputs(
    trial_sharpes: Sequence[float] | np.ndarray | None, n_trials: float | None, sr_variance: float | None
) -> tuple[float, float]:
    """(variance, number) of the trials' Sharpe ratios from either the ratios themselves or the two numbers."""
    if trial_sharpes is None:
        if n_trials is None or sr_variance is None:
            raise ValueError("give trial_sharpes, or both n_trials and sr_variance")
        return float(sr_variance), float(n_trials)
    if sr_variance is not None:
        raise ValueError("give trial_sharpes or sr_variance, not both")
    sharpes = np.asarray(trial_sharpes, dtype=float)
    if sharpes.ndim != 1 or sharpes.size < 2:
        raise ValueError("trial_sharpes must be a 1-dimensional array of at least 2 Sharpe ratios")
    if not np.isfinite(sharpes).all():
        raise ValueError("trial_sharpes must be finite: drop or replace trials whose Sharpe ratio is undefined")
    # The unbiased sample variance across trials; n_trials may still override the count (e.g. with an effective
    # number of independent trials when the configurations are correlated).
    return float(sharpes.var(ddof=1)), float(sharpes.size if n_trials is None else n_trials)


def deflated_sharpe_ratio(
    returns: Sequence[float] | np.ndarray,
    *,
    trial_sharpes: Sequence[float] | np.ndarray | None = None,
    n_trials: float | None = None,
    sr_variance: float | None = None,
    periods_per_year: float = 1.0,
) -> float | None:
    """Deflated Sharpe ratio (DSR) of the selected configuration's per-period (excess) ``returns``.

    Bailey & López de Prado (2014): the PSR of the returns' Sharpe ratio against SR0, the expected
    maximum Sharpe ratio of the trials under the null of no skill (``expected_max_sharpe``). The Sharpe ratio is
    ``performance.sharpe_ratio(returns, 1)`` (mean over sample standard deviation, ddof=1, benchmark 0: pass
    excess returns); skewness and raw kurtosis are the sample moments m3 / m2^1.5 and m4 / m2^2.

    The selection is described either by ``trial_sharpes``, the Sharpe ratios of all configurations tried (their
    ddof=1 variance and count; ``n_trials`` may override the count), or by ``n_trials`` and ``sr_variance``.
    Those Sharpe ratios are per period of ``returns`` unless ``periods_per_year`` is given, in which case they are
    taken as annualised with it and converted (SR / sqrt(ppy), variance / ppy), as the paper converts its
    annualised figures.

    None when the returns' Sharpe ratio is undefined (fewer than 2 returns, or no dispersion).
    """
    values = np.asarray(returns, dtype=float)
    if values.ndim != 1:
        raise ValueError("returns must be 1-dimensional")
    if periods_per_year <= 0:
        raise ValueError("periods_per_year must be positive")
    variance, count = _selection_inputs(trial_sharpes, n_trials, sr_variance)
    sr = sharpe_ratio(values, 1.0)
    if sr is None:
        return None
    deviations = values - values.mean()
    m2 = float(np.mean(deviations**2))
    skew = float(np.mean(deviations**3)) / m2**1.5
    kurtosis = float(np.mean(deviations**4)) / m2**2
    sr0 = expected_max_sharpe(variance / periods_per_year, count)
    return probabilistic_sharpe_ratio(sr, sr0, values.size, skew, kurtosis)


# --- probability of backtest overfitting (CSCV) --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PboResult:
    """Outcome of CSCV; arrays have one entry per combination (training set of S/2 blocks).

    ``pbo`` is the share of ``logits`` <= 0. ``relative_ranks`` are the omega_c, ``best_in_sample`` the index n*
    of the configuration chosen on the training blocks, ``in_sample_metric`` / ``out_of_sample_metric`` its
    metric on the training and test blocks (their regression is the paper's performance degradation).
    ``exhaustive`` says whether all C(S, S/2) combinations were evaluated or a sample of them.
    """

    pbo: float
    logits: np.ndarray
    n_combinations: int
    n_splits: int
    block_size: int
    dropped_rows: int
    exhaustive: bool
    relative_ranks: np.ndarray
    best_in_sample: np.ndarray
    in_sample_metric: np.ndarray
    out_of_sample_metric: np.ndarray

    @property
    def probability_of_loss(self) -> float:
        """Share of combinations where the selected configuration's out-of-sample metric is below zero."""
        return float(np.mean(self.out_of_sample_metric < 0))


def _validate_cscv(performance: np.ndarray, n_splits: int, max_combinations: int) -> None:
    if performance.ndim != 2:
        raise ValueError("performance must be a 2-dimensional (periods x configurations) array")
    n_rows, n_configs = performance.shape
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even integer of at least 2, got {n_splits}")
    if n_configs < 2:
        raise ValueError(f"CSCV needs at least 2 configurations to rank, got {n_configs}")
    if n_rows < n_splits:
        raise ValueError(f"CSCV needs at least n_splits={n_splits} periods, got {n_rows}")
    if (n_rows // n_splits) * (n_splits // 2) < 2:
        raise ValueError("each half of the periods needs at least 2 rows for a Sharpe ratio; give more periods")
    if max_combinations < 2:
        raise ValueError("max_combinations must be at least 2")
    if not np.isfinite(performance).all():
        raise ValueError("performance must be finite: align the configurations' returns before CSCV")


def _sampled_members(n_splits: int, n_pairs: int, seed: int) -> np.ndarray:
    """``n_pairs`` distinct training sets that contain block 0, each followed by its complement.

    Every complementary pair {c, c-bar} has exactly one member containing block 0, so sampling those and adding
    the complements keeps the set symmetric (each training set is also a test set), as CSCV requires.
    """
    if n_splits > _MAX_SAMPLED_SPLITS:
        raise ValueError(f"n_splits above {_MAX_SAMPLED_SPLITS} is not supported")
    rng = np.random.default_rng(seed)
    powers = np.int64(1) << np.arange(n_splits, dtype=np.int64)
    masks = np.empty(0, dtype=np.int64)
    while masks.size < n_pairs:
        # A uniform random (S/2 - 1)-subset of blocks 1..S-1 per row: the first columns of a random permutation.
        others = np.argsort(rng.random((2 * n_pairs, n_splits - 1)), axis=1)[:, : n_splits // 2 - 1] + 1
        batch = powers[0] + powers[others].sum(axis=1)
        candidates = np.concatenate((masks, batch))
        _, first = np.unique(candidates, return_index=True)
        masks = candidates[np.sort(first)]  # distinct, in order of first draw: deterministic
    members = (masks[:n_pairs, None] & powers) != 0
    return np.stack((members, ~members), axis=1).reshape(-1, n_splits)


def _combination_members(n_splits: int, max_combinations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Boolean (combinations x blocks) membership of the training sets, and whether it is exhaustive."""
    half = n_splits // 2
    if math.comb(n_splits, half) <= max_combinations:
        members = np.zeros((math.comb(n_splits, half), n_splits), dtype=bool)
        for row, chosen in enumerate(itertools.combinations(range(n_splits), half)):
            members[row, list(chosen)] = True
        return members, True
    return _sampled_members(n_splits, max_combinations // 2, seed), False


def _moment_sharpes(blocks: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-period Sharpe ratios (ddof=1, as ``performance.sharpe_ratio``) of the training and test halves.

    From per-block sums and sums of squares, so all combinations are one matrix product rather than a pass over
    the returns each. The returns are centred on each configuration's overall mean first: the variance is
    shift-invariant and centring avoids the cancellation of sum(x^2) - n mean^2. NaN where undefined.
    """
    n_splits, block_size, _ = blocks.shape
    shift = blocks.mean(axis=(0, 1))
    centred = blocks - shift
    sums = centred.sum(axis=1)
    squares = (centred**2).sum(axis=1)
    n = block_size * (n_splits // 2)
    weights = members.astype(float)
    halves = []
    for half_weights in (weights, 1.0 - weights):
        mean = half_weights @ sums / n
        variance = np.maximum(half_weights @ squares - n * mean**2, 0.0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            halves.append(np.where(variance > 0, (mean + shift) / np.sqrt(variance), np.nan))
    return halves[0], halves[1]


def _callable_metrics(
    blocks: np.ndarray, members: np.ndarray, metric: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` of the training and test rows (in time order) of each combination, one call per half."""
    n_configs = blocks.shape[2]
    in_sample = np.empty((members.shape[0], n_configs))
    out_of_sample = np.empty_like(in_sample)
    for row, member in enumerate(members):
        for target, chosen in ((in_sample, member), (out_of_sample, ~member)):
            values = np.asarray(metric(blocks[chosen].reshape(-1, n_configs)), dtype=float)
            if values.shape != (n_configs,):
                raise ValueError(f"metric must return one value per configuration, shape ({n_configs},)")
            target[row] = values
    return in_sample, out_of_sample


def _rank_selected(in_sample: np.ndarray, out_of_sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index n* of the best in-sample configuration and its out-of-sample relative rank omega, per combination.

    Undefined (NaN) metrics rank below every defined one. In-sample ties go to the first configuration;
    out-of-sample ties share their average rank (ranks 1..N, N best), and omega = rank / (N + 1) lies strictly
    inside (0, 1), so the logit is finite (the paper's omega_c in (0, 1); pypbo uses the same N + 1).
    """
    n_configs = in_sample.shape[1]
    in_sample = np.where(np.isnan(in_sample), -np.inf, in_sample)
    out_of_sample = np.where(np.isnan(out_of_sample), -np.inf, out_of_sample)
    best = np.argmax(in_sample, axis=1)
    selected = out_of_sample[np.arange(best.size), best][:, None]
    rank = (out_of_sample < selected).sum(axis=1) + ((out_of_sample == selected).sum(axis=1) + 1) / 2.0
    return best, rank / (n_configs + 1)


def probability_of_backtest_overfitting(
    performance: np.ndarray,
    *,
    n_splits: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
    max_combinations: int = 20_000,
    seed: int = 0,
) -> PboResult:
    """Probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation.

    Bailey, Borwein, López de Prado & Zhu (2017), the CSCV procedure. ``performance`` is a (T x N) matrix of per-period
    returns of N configurations over the same T periods. The rows are cut into S = ``n_splits`` contiguous blocks
    of T // S rows; when S does not divide T the oldest T mod S rows are dropped (recent data is kept). For each
    combination c of S/2 blocks (training set J, in time order) and its complement (test set J-bar):

    - n* = the configuration with the best ``metric`` on J;
    - omega_c = relative rank of n*'s metric on J-bar among all N configurations (rank / (N + 1));
    - lambda_c = ln(omega_c / (1 - omega_c)); lambda_c <= 0 means n* did no better than the median out of sample.

    PBO = share of combinations with lambda_c <= 0. About 1/2 when the configurations are indistinguishable noise,
    near 0 when in-sample skill persists, near 1 when the selection picks what reverses.

    ``metric`` maps a (rows x N) array to N values, higher is better; None is the per-period Sharpe ratio of
    ``performance.sharpe_ratio`` (ranks do not depend on annualisation), computed for all combinations at once
    from block moments. All C(S, S/2) combinations are used when there are at most ``max_combinations``
    (12,870 for the paper's S = 16); beyond that, ``max_combinations // 2`` distinct combinations containing
    block 0 are drawn uniformly with ``seed`` and each is paired with its complement, so the sample stays
    symmetric and the result is deterministic.
    """
    performance = np.asarray(performance, dtype=float)
    _validate_cscv(performance, n_splits, max_combinations)
    n_rows, n_configs = performance.shape
    block_size = n_rows // n_splits
    dropped_rows = n_rows - block_size * n_splits
    blocks = performance[dropped_rows:].reshape(n_splits, block_size, n_configs)
    members, exhaustive = _combination_members(n_splits, max_combinations, seed)

    chunk = max(1, _CSCV_BLOCK_ELEMENTS // n_configs)
    best_parts, omega_parts, is_parts, oos_parts = [], [], [], []
    for start in range(0, members.shape[0], chunk):
        part = members[start : start + chunk]
        if metric is None:
            in_sample, out_of_sample = _moment_sharpes(blocks, part)
        else:
            in_sample, out_of_sample = _callable_metrics(blocks, part, metric)
        best, omega = _rank_selected(in_sample, out_of_sample)
        rows = np.arange(best.size)
        best_parts.append(best)
        omega_parts.append(omega)
        is_parts.append(in_sample[rows, best])
        oos_parts.append(out_of_sample[rows, best])

    omega = np.concatenate(omega_parts)
    logits = np.log(omega / (1.0 - omega))
    return PboResult(
        pbo=float(np.mean(logits <= 0)),
        logits=logits,
        n_combinations=int(members.shape[0]),
        n_splits=n_splits,
        block_size=block_size,
        dropped_rows=dropped_rows,
        exhaustive=exhaustive,
        relative_ranks=omega,
        best_in_sample=np.concatenate(best_parts),
        in_sample_metric=np.concatenate(is_parts),
        out_of_sample_metric=np.concatenate(oos_parts),
    )
