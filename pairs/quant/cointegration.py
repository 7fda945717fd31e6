"""Batched Engle-Granger cointegration tests for many pairs at once.

``engle_granger_batch`` reproduces, for every requested ordered pair
``(y, x)`` of columns of a log-price matrix,

    statsmodels.tsa.stattools.coint(y, x, trend="c", autolag="aic")

(statsmodels 0.15) without calling it: the ADF statistic, the lag chosen by
``adfuller``, the number of observations of the final ADF regression and the
MacKinnon p-value, plus the hedge ratio and intercept of the pair regression.

What statsmodels does, and therefore what is matched here
--------------------------------------------------------
1. Pair regression: OLS of ``y`` on ``[x, 1]``; the residual is
   ``e_t = y_t - alpha - beta x_t``. If its R^2 is ``>= 1 - 100 sqrt(eps)`` the
   pair is declared collinear: statistic ``-inf``, p-value 0.
2. ``adfuller(e, regression="n", autolag="aic")`` on the residual (``T`` values):

   * ``maxlag = min(ceil(12 (T/100)^(1/4)), T // 2 - 1)``.
   * The lag search regresses ``d_t = e_{t+1} - e_t`` on ``[e_t, d_{t-1}, ...,
     d_{t-L}]`` (no constant) for ``L = 0..maxlag``, all on the *same* sample
     ``t = maxlag .. T-2`` (``T - 1 - maxlag`` rows) so the AICs are comparable.
   * ``AIC = -2 llf + 2 k`` with the profile Gaussian log-likelihood
     ``llf = -n/2 (log(2 pi) + log(RSS/n) + 1)`` and ``k = L + 1`` (statsmodels
     counts ``df_model + k_constant`` = rank of the design, as there is no
     constant). The smallest AIC wins; exact ties go to the smaller lag.
   * The chosen lag is then re-estimated on its own, longer sample
     ``t = L .. T-2`` (``T - 1 - L`` rows) and the statistic is the t-value of
     the ``e_t`` coefficient with ``sigma^2 = RSS / (n - L - 1)``.
3. p-value: ``mackinnonp(stat, regression="c", N=2)``; critical values:
   ``mackinnoncrit(N=2, regression="c", nobs=T - 1)``.

How it is batched
-----------------
Levels are centred by their full-sample means, so the residual of a pair is
exactly ``e = c_y - beta c_x`` (the intercept disappears) and
``d = d_y - beta d_x``. Every entry of the ADF cross-product (Gram) matrix is
therefore a quadratic form in ``(1, -beta)`` of per-symbol lagged cross sums
``sum_t u_{a,t} v_{b,t-k}``, which are computed for all symbols with one BLAS
matrix product per lag. Those sums run over the full available range; the
entries of a given regression differ from them only by a few rows at the
start and the end of the sample (at most ``maxlag`` each), which are removed
per pair with small batched products. One batched Cholesky factorisation of
the ``[e_t, d_{t-1}, ..., d_{t-maxlag}, d_t]`` Gram matrix gives the RSS of
every nested lag order at once (the regressions are prefixes of the same
design). The chosen lag is refitted with a second Gram (the search Gram plus
the extra leading rows), with the ``e_t`` column ordered last so its t-value
is read off the Cholesky factor directly.

Numerical care: all products are float64 on centred data. A pair whose Gram
could have lost too many digits (residual tiny relative to its legs, or a
nearly singular design) is recomputed by ``engle_granger_single``, which
forms the design matrices explicitly and uses QR like statsmodels' SVD-based
least squares. On real hourly crypto prices this fall-back is essentially
never taken.

Pairs with a constant leg have no defined test: they are reported with NaN
hedge ratio, intercept, statistic and p-value, ``lag = -1`` and ``nobs = 0``.
Collinear pairs have ``adf_stat = -inf``, ``pvalue = 0``, ``lag = -1`` and
``nobs = 0`` (statsmodels does not run the ADF regression for them).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from pairs.quant.cross_products import Sides, bipartite_sides, cross_products
from pairs.quant.forked import forked_map
from pairs.quant.gram_factor import _MIN_PIVOT_RATIO, _cholesky, _final_statistics, _min_pivot_ratio
from pairs.quant.mackinnon import mackinnon_critical_values, mackinnon_pvalue

# statsmodels' coint() declares a pair collinear above this R^2.
COLLINEAR_R_SQUARED = 1.0 - 100.0 * np.sqrt(np.finfo(np.float64).eps)

# Past this loss-of-digits estimate a pair is recomputed on explicit design
# matrices. The Gram entries lose about log10(amplification) digits to
# cancellation between the legs, and the statistic inherits roughly
# eps * amplification * sqrt(n); 1e5 keeps that below ~1e-9.
_MAX_CANCELLATION_AMPLIFICATION = 1e5

# Pairs per vectorised block. A block's (pairs, 28, 28) Gram stacks stay in the cache at 256 (1.5 MB each for 2,000
# bars); 2,048 spilled them and took 1.7x as long on 100 and 300 real symbols (#18; results are bit-identical).
DEFAULT_BLOCK_SIZE = 256
# Symbols from which the cross sums' matrix products are shared by the screen's processes (each writes its lags into
# memory shared with the others, forked before the pairs): below it a fork costs more than the products.
SHARED_SUMS_MIN_SYMBOLS = 400


@dataclass(frozen=True)
class EngleGrangerResult:
    """Engle-Granger results, one entry per tested ordered pair.

    ``adf_stat``, ``pvalue``, ``lag`` and ``nobs`` correspond to
    ``coint(y, x, trend="c", autolag="aic")[:2]`` and
    ``adfuller(resid, regression="n", autolag="aic")`` lags/nobs.
    ``critical_values`` (1 %, 5 %, 10 %) are ``coint``'s and shared by all pairs.
    """

    y_index: np.ndarray
    x_index: np.ndarray
    hedge_ratio: np.ndarray
    intercept: np.ndarray
    adf_stat: np.ndarray
    lag: np.ndarray
    pvalue: np.ndarray
    nobs: np.ndarray
    maxlag: int
    critical_values: np.ndarray

    def __len__(self) -> int:
        return len(self.y_index)


class EngleGrangerPairResult(NamedTuple):
    """Result of ``engle_granger_single`` for one pair (same meaning as above)."""

    hedge_ratio: float
    intercept: float
    adf_stat: float
    lag: int
    pvalue: float
    nobs: int


def default_maxlag(n_obs: int) -> int:
    """adfuller's default maximum lag (Schwert's rule, capped for short series)."""
    schwert = int(np.ceil(12.0 * np.power(n_obs / 100.0, 1 / 4.0)))
    return min(n_obs // 2 - 1, schwert)


def all_ordered_pairs(n_symbols: int) -> np.ndarray:
    """All ``(y, x)`` index pairs with ``y != x``, row-major, shape ``(n(n-1), 2)``."""
    y_index, x_index = np.nonzero(~np.eye(n_symbols, dtype=bool))
    return np.column_stack((y_index, x_index))


def _resolve_maxlag(n_obs: int, maxlag: int | None) -> int:
    if maxlag is None:
        maxlag = default_maxlag(n_obs)
    elif not 0 <= maxlag <= n_obs // 2 - 1:
        raise ValueError(f"maxlag must be in 0..{n_obs // 2 - 1} for {n_obs} observations")
    # Every lag-search regression needs at least one residual degree of freedom.
    if n_obs - 1 - maxlag <= maxlag + 1:
        raise ValueError(f"{n_obs} observations are too few for maxlag={maxlag}")
    return maxlag


def _adf_no_constant(series: np.ndarray, maxlag: int) -> tuple[float, int, int]:
    """adfuller(series, regression="n", autolag="aic") on explicit designs via QR.

    Returns (statistic, used lag, nobs of the final regression).
    """
    n_obs = len(series)
    diffs = np.diff(series)
    n_search = n_obs - 1 - maxlag
    lagged_diffs = [diffs[maxlag - lag : n_obs - 1 - lag] for lag in range(1, maxlag + 1)]
    augmented = np.column_stack([series[maxlag:-1], *lagged_diffs, diffs[maxlag:]])
    triangular = np.linalg.qr(augmented, mode="r")
    # Regressions on the first m columns are nested: their RSS is the squared
    # norm of the part of the target column not captured by those columns.
    target_components = triangular[: maxlag + 2, -1] ** 2
    rss = np.cumsum(target_components[::-1])[::-1][1:]
    n_params = np.arange(1, maxlag + 2)
    half_n = n_search / 2.0
    llf = -half_n * np.log(2 * np.pi) - half_n * np.log(rss / n_search) - half_n
    lag = int(np.argmin(-2 * llf + 2 * n_params))

    n_final = n_obs - 1 - lag
    lagged_diffs = [diffs[lag - k : n_obs - 1 - k] for k in range(1, lag + 1)]
    design = np.column_stack([*lagged_diffs, series[lag:-1], diffs[lag:]])
    triangular = np.linalg.qr(design, mode="r")
    sigma = abs(triangular[lag + 1, lag + 1]) / np.sqrt(n_final - lag - 1)
    stat = triangular[lag, lag + 1] * np.sign(triangular[lag, lag]) / sigma
    return float(stat), lag, n_final


def engle_granger_single(y: np.ndarray, x: np.ndarray, *, maxlag: int | None = None) -> EngleGrangerPairResult:
    """Engle-Granger test of one pair on explicit design matrices (QR least squares).

    The unbatched reference path, also used by ``engle_granger_batch`` for pairs
    whose Gram matrices would be numerically unreliable. Same conventions as
    ``engle_granger_batch``.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n_obs = len(y)
    maxlag = _resolve_maxlag(n_obs, maxlag)
    if np.ptp(y) == 0 or np.ptp(x) == 0:
        return EngleGrangerPairResult(np.nan, np.nan, np.nan, -1, np.nan, 0)
    design = np.column_stack((x, np.ones(n_obs)))
    (hedge_ratio, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ np.array([hedge_ratio, intercept])
    centred_y = y - y.mean()
    r_squared = 1.0 - (resid @ resid) / (centred_y @ centred_y)
    if r_squared >= COLLINEAR_R_SQUARED:
        return EngleGrangerPairResult(float(hedge_ratio), float(intercept), -np.inf, -1, 0.0, 0)
    stat, lag, nobs = _adf_no_constant(resid, maxlag)
    pvalue = float(mackinnon_pvalue(stat, "c", n_series=2))
    return EngleGrangerPairResult(float(hedge_ratio), float(intercept), stat, lag, pvalue, nobs)


@dataclass(frozen=True)
class _SymbolCrossSums:
    """Per-symbol lagged cross sums shared by all pairs.

    With ``c`` the centred levels (rows t = 0..T-1) and ``d_s = c_{s+1} - c_s``:
    ``constant`` flags constant symbols,
    ``level_full[a, b] = sum_{t<=T-1} c_a c_b``, ``level[a, b]`` the same over
    ``t <= T-2``, ``level_diff[j, a, b] = sum_{t=j}^{T-2} c_{a,t} d_{b,t-j}`` and
    ``diff_diff[k, a, b] = sum_{s=k}^{T-2} d_{a,s} d_{b,s-k}``.
    Computed with ``sides`` (``pairs.quant.cross_products``), the entries within one side are not these sums (zero
    in the products, corrections of the recursions below): no pair across the sides reads them.
    """

    means: np.ndarray
    constant: np.ndarray
    centred: np.ndarray
    diffs: np.ndarray
    level_full: np.ndarray
    level: np.ndarray
    level_diff: np.ndarray
    diff_diff: np.ndarray

    @classmethod
    def compute(cls, log_prices: np.ndarray, maxlag: int, *, processes: int = 1, sides: Sides | None = None
                ) -> _SymbolCrossSums:
        """The sums; with ``processes`` > 1 forked processes share the matrix products (one per lag, most of the
        time for a large universe: each writes its lags into memory shared with this process). With ``sides``,
        only the entries that pairs across the two sides read (``pairs.quant.cross_products``)."""
        n_obs, n_symbols = log_prices.shape
        means = log_prices.mean(axis=0)
        # Tested on the raw values: centring a constant column need not give exact zeros.
        constant = np.ptp(log_prices, axis=0) == 0
        centred = log_prices - means
        diffs = np.diff(centred, axis=0)
        # Products 0..maxlag: diff_diff per lag; maxlag + 1: the levels' cross sums; maxlag + 2: level_diff[0].
        products = _shared_empty((maxlag + 3, n_symbols, n_symbols), shared=processes > 1)

        def multiply(first: int, stop: int) -> None:
            for k in range(first, stop):
                if k <= maxlag:
                    cross_products(diffs[k:], diffs[: n_obs - 1 - k], sides, out=products[k])
                elif k == maxlag + 1:
                    cross_products(centred, centred, sides, out=products[k])
                else:
                    cross_products(centred[: n_obs - 1], diffs, sides, out=products[k])

        forked_map(multiply, maxlag + 3, processes=processes)
        diff_diff = products[: maxlag + 1]
        level_full = products[maxlag + 1]
        level = level_full - np.outer(centred[-1], centred[-1])
        # One matrix product per lag for the level-change sums too would double the cost (the products are most of
        # it for a large universe, #18). Since c_t = c_{t-1} + d_{t-1}, each lag follows from the one before:
        # level_diff[j] = level_diff[j-1] + diff_diff[j-1] - c_{T-1} d_{T-1-j}' (the sums' ranges end at T-2).
        level_diff = np.empty_like(diff_diff)
        level_diff[0] = products[maxlag + 2]
        for lag in range(1, maxlag + 1):
            np.add(level_diff[lag - 1], diff_diff[lag - 1], out=level_diff[lag])
            level_diff[lag] -= np.outer(centred[-1], diffs[n_obs - 1 - lag])
        return cls(means, constant, centred, diffs, level_full, level, level_diff, diff_diff)


def _shared_empty(shape: tuple[int, ...], *, shared: bool) -> np.ndarray:
    """An uninitialised float64 array; with ``shared``, in anonymous memory that forked processes write into and
    this process sees (MAP_SHARED)."""
    if not shared:
        return np.empty(shape)
    size = int(np.prod(shape)) * 8
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=np.float64, count=int(np.prod(shape))).reshape(shape)


def _pair_form(sums: np.ndarray, y: np.ndarray, x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """sum (u_y - beta u_x)(v_y - beta v_x) from symbol sums[..., a, b] = sum u_a v_b."""
    return sums[..., y, y] - beta * (sums[..., y, x] + sums[..., x, y]) + beta**2 * sums[..., x, x]


class _BlockResult(NamedTuple):
    hedge_ratio: np.ndarray
    intercept: np.ndarray
    adf_stat: np.ndarray
    lag: np.ndarray
    nobs: np.ndarray
    needs_exact_path: np.ndarray


def _edge_rows(
    sums: _SymbolCrossSums, y: np.ndarray, x: np.ndarray, beta: np.ndarray, maxlag: int
) -> tuple[np.ndarray, np.ndarray]:
    """Regression rows just outside the full-range sums, with d taken as 0 outside 0..T-2.

    Head rows are t = 0..maxlag-1, in search column order
    [e_t, d_{t-1}, ..., d_{t-maxlag}, d_t], shape (pairs, maxlag, maxlag + 2):
    a regression starting at t = a leaves out those with t < a. Tail rows are
    t = T-1..T-2+maxlag, where only the lagged columns d_{t-1}..d_{t-maxlag}
    still reach into the data, shape (pairs, maxlag, maxlag).
    """
    n_pairs = len(y)
    centred, diffs = sums.centred, sums.diffs
    tail_start = diffs.shape[0] - maxlag
    head_level = (centred[:maxlag, y] - beta * centred[:maxlag, x]).T
    head_diffs = (diffs[:maxlag, y] - beta * diffs[:maxlag, x]).T
    tail_diffs = (diffs[tail_start:, y] - beta * diffs[tail_start:, x]).T
    zeros = np.zeros((n_pairs, maxlag))
    # Row r, lag j reads the zero-padded series at r - j + maxlag (head and tail alike).
    search_lags = np.r_[1 : maxlag + 1, 0]
    head_position = np.arange(maxlag)[:, None] - search_lags[None, :] + maxlag
    tail_position = np.arange(maxlag)[:, None] - search_lags[None, :-1] + maxlag
    head = np.empty((n_pairs, maxlag, maxlag + 2))
    head[:, :, 0] = head_level
    head[:, :, 1:] = np.concatenate((zeros, head_diffs), axis=1).take(head_position, axis=1)
    tail = np.concatenate((tail_diffs, zeros), axis=1).take(tail_position, axis=1)
    return head, tail


def _screen_block(sums: _SymbolCrossSums, y: np.ndarray, x: np.ndarray, maxlag: int) -> _BlockResult:
    n_obs = sums.centred.shape[0]
    n_pairs = len(y)
    size = maxlag + 2

    constant_leg = sums.constant[y] | sums.constant[x]
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(constant_leg, np.nan, sums.level_full[x, y] / sums.level_full[x, x])
        r_squared = 1.0 - _pair_form(sums.level_full, y, x, beta) / sums.level_full[y, y]
    intercept = sums.means[y] - beta * sums.means[x]
    collinear = ~constant_leg & (r_squared >= COLLINEAR_R_SQUARED)
    testable = ~constant_leg & ~collinear
    # Placeholder slope keeps the arithmetic finite for untestable pairs.
    beta_safe = np.where(testable, beta, 0.0)

    # Gram of the zero-padded rows t = 0..T-2 in search column order
    # [e_t, d_{t-1}, ..., d_{t-maxlag}, d_t] (lags 1..maxlag, then the target):
    # the symbol sums cover all rows where a lagged column still reaches into
    # the data, so the tail rows past T-2 are subtracted. Each regression then
    # only has to drop its own head rows.
    level_level = _pair_form(sums.level, y, x, beta_safe)
    level_diff = _pair_form(sums.level_diff, y, x, beta_safe)
    diff_autocross = _pair_form(sums.diff_diff, y, x, beta_safe)
    search_lags = np.r_[1 : maxlag + 1, 0]
    lag_distance = np.abs(search_lags[:, None] - search_lags[None, :])
    common = np.empty((n_pairs, size, size))
    common[:, 0, 0] = level_level
    common[:, 0, 1:] = level_diff.T[:, search_lags]
    common[:, 1:, 0] = common[:, 0, 1:]
    common[:, 1:, 1:] = np.ascontiguousarray(diff_autocross.T).take(lag_distance.ravel(), axis=1).reshape(
        n_pairs, size - 1, size - 1)
    head, tail = _edge_rows(sums, y, x, beta_safe, maxlag)
    common[:, 1 : maxlag + 1, 1 : maxlag + 1] -= tail.transpose(0, 2, 1) @ tail

    # Lag search on the common sample t = maxlag..T-2.
    search_gram = common - head.transpose(0, 2, 1) @ head
    search_gram[~testable] = np.eye(size)
    search_factor, search_ok = _cholesky(search_gram)
    target_row = search_factor[:, -1, :]
    explained = target_row[:, :-1] ** 2
    # RSS with the first m regressors = unexplained part + what regressors m.. explain.
    rss = target_row[:, -1:] ** 2 + np.concatenate(
        (np.cumsum(explained[:, ::-1], axis=1)[:, ::-1][:, 1:], np.zeros((n_pairs, 1))), axis=1
    )
    n_search = n_obs - 1 - maxlag
    half_n = n_search / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        llf = -half_n * np.log(2 * np.pi) - half_n * np.log(rss / n_search) - half_n
    aic = -2 * llf + 2 * np.arange(1, maxlag + 2)
    lag = np.argmin(aic, axis=1)

    adf_stat, final_ok, final_pivot_ok = _final_statistics(common, head, lag, testable, maxlag, n_obs)
    nobs = n_obs - 1 - lag

    with np.errstate(divide="ignore", invalid="ignore"):
        amplification = np.maximum(
            (sums.level[y, y] + beta_safe**2 * sums.level[x, x]) / level_level,
            (sums.diff_diff[0, y, y] + beta_safe**2 * sums.diff_diff[0, x, x]) / diff_autocross[0],
        )
    reliable = (
        search_ok
        & final_ok
        & (amplification < _MAX_CANCELLATION_AMPLIFICATION)
        & (_min_pivot_ratio(search_factor, search_gram) > _MIN_PIVOT_RATIO)
        & final_pivot_ok
        & np.isfinite(adf_stat)
    )

    adf_stat = np.where(collinear, -np.inf, np.where(constant_leg, np.nan, adf_stat))
    lag = np.where(testable, lag, -1)
    nobs = np.where(testable, nobs, 0)
    return _BlockResult(beta, intercept, adf_stat, lag, nobs, testable & ~reliable)


def _screen_range(sums: _SymbolCrossSums, log_prices: np.ndarray, pairs: np.ndarray, local_pairs: np.ndarray,
                  maxlag: int, block_size: int, first: int, stop: int) -> tuple[np.ndarray, ...]:
    """Pairs ``first..stop-1`` in blocks of ``block_size``: (hedge ratio, intercept, statistic, lag, nobs)."""
    n_pairs = stop - first
    hedge_ratio, intercept, adf_stat = np.empty(n_pairs), np.empty(n_pairs), np.empty(n_pairs)
    lag, nobs = np.empty(n_pairs, dtype=np.int64), np.empty(n_pairs, dtype=np.int64)
    for start in range(0, n_pairs, block_size):
        block = slice(start, start + block_size)
        rows = slice(first + start, min(first + start + block_size, stop))
        result = _screen_block(sums, local_pairs[rows, 0], local_pairs[rows, 1], maxlag)
        hedge_ratio[block], intercept[block], adf_stat[block] = result.hedge_ratio, result.intercept, result.adf_stat
        lag[block], nobs[block] = result.lag, result.nobs
        for offset in np.flatnonzero(result.needs_exact_path):
            index, pair = start + offset, pairs[first + start + offset]
            exact = engle_granger_single(log_prices[:, pair[0]], log_prices[:, pair[1]], maxlag=maxlag)
            hedge_ratio[index], intercept[index], adf_stat[index] = exact[:3]
            lag[index], nobs[index] = exact.lag, exact.nobs
    return hedge_ratio, intercept, adf_stat, lag, nobs


def engle_granger_batch(
    log_prices: np.ndarray,
    pairs: np.ndarray | None = None,
    *,
    maxlag: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    processes: int = 1,
) -> EngleGrangerResult:
    """Engle-Granger test (``coint(y, x, trend="c", autolag="aic")``) for many pairs.

    Parameters
    ----------
    log_prices:
        ``(T, N)`` float array, T bars of N symbols on a common grid, no NaN.
        Usually log prices, but any series works: the test is run on the
        columns as given.
    pairs:
        ``(P, 2)`` integer array of ``(y_index, x_index)`` column pairs; each row
        is a separate test (swap the columns for the other direction). Defaults
        to all ordered pairs.
    maxlag:
        Maximum ADF lag; default is adfuller's ``min(ceil(12 (T/100)^0.25), T//2 - 1)``.
    block_size:
        Pairs processed per vectorised block. Memory per block is about
        ``block_size * (maxlag + 2)^2 * 8 bytes * ~12``; the per-symbol sums
        need ``2 (maxlag + 1) N^2 * 8`` bytes on top (about 110 MB for 500
        symbols and 2,000 bars).
    processes:
        Forked processes that share the cross sums' matrix products (from ``SHARED_SUMS_MIN_SYMBOLS`` symbols),
        then the pairs (``pairs.quant.forked``); the results are bit-identical to one process's.
    """
    log_prices = np.asarray(log_prices, dtype=np.float64)
    if log_prices.ndim != 2:
        raise ValueError("log_prices must be a 2-D (T, N) array")
    if not np.isfinite(log_prices).all():
        raise ValueError("log_prices must be finite (no NaN or inf)")
    if block_size < 1:
        raise ValueError("block_size must be positive")
    n_obs, n_symbols = log_prices.shape
    maxlag = _resolve_maxlag(n_obs, maxlag)
    if pairs is None:
        pairs = all_ordered_pairs(n_symbols)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n_symbols):
        raise ValueError(f"pair indices must be in 0..{n_symbols - 1}")

    # Only the symbols that occur in some pair enter the N^2 cross sums.
    used_symbols, local_pairs = np.unique(pairs, return_inverse=True)
    local_pairs = local_pairs.reshape(-1, 2)
    sums = _SymbolCrossSums.compute(log_prices[:, used_symbols], maxlag,
                                    processes=processes if len(used_symbols) >= SHARED_SUMS_MIN_SYMBOLS else 1,
                                    sides=bipartite_sides(local_pairs, len(used_symbols)))

    screen_range = partial(_screen_range, sums, log_prices, pairs, local_pairs, maxlag, block_size)
    parts = forked_map(screen_range, len(pairs), processes=processes)
    hedge_ratio, intercept, adf_stat, lag, nobs = (np.concatenate(column) for column in zip(*parts, strict=True))

    return EngleGrangerResult(
        y_index=pairs[:, 0].copy(),
        x_index=pairs[:, 1].copy(),
        hedge_ratio=hedge_ratio,
        intercept=intercept,
        adf_stat=adf_stat,
        lag=lag,
        pvalue=mackinnon_pvalue(adf_stat, "c", n_series=2),
        nobs=nobs,
        maxlag=maxlag,
        critical_values=mackinnon_critical_values("c", n_series=2, nobs=n_obs - 1),
    )
