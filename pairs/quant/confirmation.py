"""Out-of-sample confirmation of many pair directions at once: the batched ``screening.confirm_out_of_sample``.

For every direction ``(y, x)`` of a (bars x symbols) matrix of log prices, ``confirm_batch`` computes what
``confirm_out_of_sample(log_y, log_x, holdout_bars=H, max_pvalue=q)`` computes, with the same conventions:

1. Formation fit on all but the last H bars: ``beta = cov(y, x) / var(x)`` (population moments),
   ``alpha = mean(y) - beta mean(x)``; from one shared matrix of centred per-symbol cross products.
2. Held-out spread ``e = y - alpha - beta x`` on the last H bars and statsmodels'
   ``adfuller(e, regression="c", autolag="AIC")``: ``maxlag = min(ceil(12 (H/100)^(1/4)), H // 2 - 2)``; the
   regressions of ``d_t`` on ``[1, e_t, d_{t-1..t-L}]`` for ``L = 0..maxlag`` all on the common sample
   ``t = maxlag..H-2``, ``AIC = -2 llf + 2 (L + 2)``, the smallest wins (ties to the smaller lag); the chosen lag
   is refitted on its own sample ``t = L..H-2`` and the statistic is the t-value of ``e_t``. p-value:
   MacKinnon's ``mackinnonp(stat, regression="c", N=1)`` (``pairs.quant.mackinnon``).
3. Johansen trace test (r = 0, constant, 95 %) of the system ``(y, x)`` on the whole window with the lag order of
   ``johansen.select_k_ar_diff`` (minimum-AIC VAR in levels, all orders on one sample), i.e.
   ``coint_johansen(system, 0, k).lr1[0]`` against 15.4943. The statistic is
   ``n log(det S00 / det S00.k)``: the residual cross-products of the changes without and with the level
   regressors, which is ``-n sum log(1 - lambda_i)`` without an eigen-decomposition. As in statsmodels the level
   regressor is ``y_{t+1-k}`` (for k = 0 that is the level after the change; for k >= 1 it spans the same space
   as ``y_t`` given the lagged changes).
4. ``confirmed = (p <= max_pvalue) and (trace > critical)``.

How it is batched (``pairs.quant.lag_gram``): every regression above is a set of columns of the design
``[1, level_t, d_{t-1..t-p}, d_t]`` of a small system (the spread of a direction; the two legs of a pair). Its
Gram matrix comes from lagged cross sums of the system's changes, one batched product per lag; one batched
Cholesky factorisation gives the fit of every lag order at once, a second one the chosen order's statistic.
Per-symbol work (formation moments, the held-out legs' scale) is shared and done once per call. The lagged
sums are taken per direction (per pair for Johansen) rather than per symbol pair as in
``pairs.quant.cointegration``: confirmation sees a few hundred passing directions, not all ``N (N - 1)``, so
this costs O(directions x bars x lags) instead of O(symbols^2 x bars x lags), and the spread is formed before
it is summed, so there is no cancellation between the legs. Johansen is symmetric in its two series: both
directions of an unordered pair share one system. Python loops run over lags, blocks of ``block_size``
directions, and the rare directions recomputed on explicit designs.

Directions recomputed one by one (bounded by their number; none on the real hourly data we test on): a held-out
spread that is tiny against its legs (more than 5 digits lost forming it; the formation fit and the spread are
then redone with ``confirm_out_of_sample``'s own arithmetic, so its input is bit-identical) or whose normal
equations are ill-conditioned; a Johansen system whose normal equations are ill-conditioned
(``johansen.johansen_test``, what ``confirm_out_of_sample`` calls). Where statsmodels would raise (the
formation ``x`` or the whole held-out spread constant, a leg constant over the window) the statistics are NaN,
the lags -1 and the direction is not confirmed.

Exactness (tests/pairs/quant/test_confirmation.py): statistics agree with statsmodels to 1e-9, relative where
they exceed 1 in size and absolute below; p-values to 1e-9 absolute; lags exactly (about 4e-13 at most on real
data). Beyond reach: (a) legs collinear to about 1e-9 of their level, where the Johansen statistic of the data
as given is ill-conditioned (statsmodels raises, or moves in the third digit when the two series are swapped;
``johansen_test`` stays within about 1e-9 down to a spread 1e-9 of the prices and degrades below); (b) a lag
whose AIC ties the best one to rounding (about 1e-13 relative), which any implementation could resolve either
way (not seen on real data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairs.quant.johansen import _TRACE_CRITICAL, DEFAULT_MAX_K_AR_DIFF, johansen_test
from pairs.quant.lag_gram import factorise, final_order_gram, lag_grams, log_det_unit_plus, nested_log_dets
from pairs.quant.mackinnon import mackinnon_pvalue

# Johansen trace critical value, r = 0 with two series and a constant, 95 % (MacKinnon, Haug and Michelis 1999).
JOHANSEN_CRITICAL_95 = float(_TRACE_CRITICAL[0][1, 1])
# Forming the held-out spread loses about log10(this) digits; past it the direction is recomputed from the exact
# arithmetic of the reference (the statistic then inherits about 1e-16 * this relative error).
MAX_SPREAD_AMPLIFICATION = 1e5
DEFAULT_BLOCK_SIZE = 256
_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class ConfirmationBatch:
    """One entry per direction, in the order given. The fields of ``screening.Confirmation`` plus the lags.

    ``holdout_lag`` is the lag adfuller chose (-1 where the test is undefined), ``holdout_maxlag`` its search
    bound; ``johansen_k_ar_diff`` the Johansen lag order (-1 where undefined).
    """

    y_index: np.ndarray
    x_index: np.ndarray
    confirmed: np.ndarray
    formation_hedge_ratio: np.ndarray
    formation_intercept: np.ndarray
    holdout_adf_stat: np.ndarray
    holdout_pvalue: np.ndarray
    holdout_lag: np.ndarray
    holdout_maxlag: int
    johansen_trace: np.ndarray
    johansen_critical_95: np.ndarray
    johansen_passed: np.ndarray
    johansen_k_ar_diff: np.ndarray

    def __len__(self) -> int:
        return len(self.y_index)

    def confirmation_fields(self, index: int) -> dict[str, float | bool]:
        """Direction ``index`` as the keyword arguments of ``screening.Confirmation`` (plain Python scalars)."""
        names = ("formation_hedge_ratio", "formation_intercept", "holdout_adf_stat", "holdout_pvalue",
                 "johansen_trace", "johansen_critical_95")
        fields: dict[str, float | bool] = {name: float(getattr(self, name)[index]) for name in names}
        fields["confirmed"] = bool(self.confirmed[index])
        fields["johansen_passed"] = bool(self.johansen_passed[index])
        return fields


def confirm_candidates(result, log_closes: np.ndarray, selected: np.ndarray, *, holdout_bars: int,
                       max_pvalue: float) -> dict:
    """``screening.confirm_out_of_sample`` of the ``selected`` directions (indices into a ``screening.ScreenResult``)
    as ``{index: screening.Confirmation}``, batched: held-out ADF and Johansen trace of all of them at once
    (``confirm_batch``, equal to statsmodels)."""
    from pairs.quant.screening import Confirmation  # screening is the higher-level module; no import cycle

    if len(selected) == 0:
        return {}
    batch = confirm_batch(log_closes, result.y_index[selected], result.x_index[selected], holdout_bars=holdout_bars,
                          max_pvalue=max_pvalue)
    return {int(k): Confirmation(**batch.confirmation_fields(i)) for i, k in enumerate(selected)}


def holdout_maxlag(holdout_bars: int) -> int:
    """adfuller's default maximum lag with a constant: ``min(ceil(12 (H/100)^(1/4)), H // 2 - 2)``."""
    schwert = int(np.ceil(12.0 * np.power(holdout_bars / 100.0, 1 / 4.0)))
    return min(holdout_bars // 2 - 2, schwert)


def adf_constant_single(series: np.ndarray, maxlag: int) -> tuple[float, int]:
    """``adfuller(series, maxlag, regression="c", autolag="AIC")``: (statistic, lag), on explicit designs (QR).

    The reference path for spreads the batch cannot trust; (NaN, -1) where adfuller raises (constant input).
    """
    series = np.asarray(series, dtype=np.float64)
    if not np.isfinite(series).all() or series.max() == series.min():
        return np.nan, -1
    n_obs = len(series)
    diffs = np.diff(series)
    ones = np.ones(n_obs - 1 - maxlag)
    lagged = [diffs[maxlag - lag : n_obs - 1 - lag] for lag in range(1, maxlag + 1)]
    triangular = np.linalg.qr(np.column_stack([ones, series[maxlag:-1], *lagged, diffs[maxlag:]]), mode="r")
    # The regressions are prefixes of the design: RSS with the first q columns = sum_{j>=q} R[j, target]^2.
    rss = np.cumsum(triangular[:, -1][::-1] ** 2)[::-1][2:]
    half_n = len(ones) / 2.0
    llf = -half_n * (_LOG_2PI + np.log(rss / len(ones)) + 1.0)
    lag = int(np.argmin(-2.0 * llf + 2.0 * np.arange(2, maxlag + 3)))

    n_final = n_obs - 1 - lag
    lagged = [diffs[lag - k : n_obs - 1 - k] for k in range(1, lag + 1)]
    design = np.column_stack([np.ones(n_final), *lagged, series[lag:-1], diffs[lag:]])
    triangular = np.linalg.qr(design, mode="r")
    sigma = abs(triangular[-1, -1]) / np.sqrt(n_final - lag - 2)
    return float(triangular[-2, -1] * np.sign(triangular[-2, -2]) / sigma), lag


def _reference_spread(log_y: np.ndarray, log_x: np.ndarray, holdout_bars: int) -> tuple[float, float, np.ndarray]:
    """Formation fit and held-out spread with ``confirm_out_of_sample``'s own arithmetic (bit-identical)."""
    formation_y, formation_x = log_y[:-holdout_bars], log_x[:-holdout_bars]
    if np.ptp(formation_x) == 0:
        return np.nan, np.nan, np.full(holdout_bars, np.nan)
    beta = float(np.cov(formation_y, formation_x, ddof=0)[0, 1] / np.var(formation_x))
    alpha = float(formation_y.mean() - beta * formation_x.mean())
    return beta, alpha, log_y[-holdout_bars:] - alpha - beta * log_x[-holdout_bars:]


def _formation_fit(formation: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hedge ratio and intercept of every direction from the formation bars' per-symbol moments."""
    means = formation.mean(axis=0)
    centred = formation - means
    cross = centred.T @ centred
    constant_x = np.ptp(formation, axis=0)[x] == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(constant_x, np.nan, cross[x, y] / cross[x, x])
    return beta, means[y] - beta * means[x]


def _holdout_adf(holdout: np.ndarray, y: np.ndarray, x: np.ndarray, beta: np.ndarray, alpha: np.ndarray,
                 maxlag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADF with constant and AIC lag of each direction's held-out spread: (statistic, lag, reliable)."""
    spread = holdout[:, y] - alpha - beta * holdout[:, x]  # the reference's expression, one column per direction
    grams = lag_grams(spread.T[:, None, :], maxlag)
    n_search = grams.n_rows - maxlag
    search_factor, search_ok = factorise(grams.gram(maxlag))
    log_rss = nested_log_dets(search_factor, 1, maxlag)
    llf = -n_search / 2.0 * (_LOG_2PI + log_rss - np.log(n_search) + 1.0)
    lag = np.argmin(-2.0 * llf + 2.0 * np.arange(2, maxlag + 3), axis=1)

    final_factor, final_ok = factorise(final_order_gram(grams, lag))
    sigma = final_factor[:, -1, -1] / np.sqrt(grams.n_rows - 2 * lag - 2)
    stat = final_factor[:, -1, -2] / sigma
    # Rounding in y - alpha - beta x is relative to the legs; the test sees the spread's changes.
    legs = np.abs(holdout).max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        amplification = (legs[y] + np.abs(alpha) + np.abs(beta) * legs[x]) / np.sqrt(
            grams.common[:, -1, -1] / grams.n_rows
        )
    reliable = search_ok & final_ok & np.isfinite(stat) & (amplification < MAX_SPREAD_AMPLIFICATION)
    return stat, lag, reliable


def _johansen_systems(log_prices: np.ndarray, first: np.ndarray, second: np.ndarray,
                      max_k_ar_diff: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Johansen trace (r = 0, constant) and lag order of each two-series system: (trace, k, reliable)."""
    grams = lag_grams(np.stack((log_prices[:, first].T, log_prices[:, second].T), axis=1), max_k_ar_diff)
    # Lag order: the VAR with k + 1 lags in levels is the regression on [1, level_t, d_{t-1..t-k}].
    n_search = grams.n_rows - max_k_ar_diff
    search_factor, search_ok = factorise(grams.gram(max_k_ar_diff))
    log_det_sigma = nested_log_dets(search_factor, 2, max_k_ar_diff) - 2.0 * np.log(n_search)
    k_ar_diff = np.argmin(log_det_sigma + 8.0 * np.arange(1, max_k_ar_diff + 2) / n_search, axis=1)

    final = final_order_gram(grams, k_ar_diff)
    level, target = slice(-4, -2), slice(-2, None)
    # k = 0: statsmodels' level regressor is y_{t+1} = y_t + d_t.
    plain = final[k_ar_diff == 0]
    plain[:, level, :] += plain[:, target, :]
    plain[:, :, level] += plain[:, :, target]
    final[k_ar_diff == 0] = plain
    factor, final_ok = factorise(final)
    explained = np.linalg.solve(factor[:, target, target], factor[:, target, level])
    trace = (grams.n_rows - k_ar_diff) * log_det_unit_plus(explained @ explained.transpose(0, 2, 1))
    return trace, k_ar_diff, search_ok & final_ok & np.isfinite(trace)


def _johansen_single(system: np.ndarray, max_k_ar_diff: int) -> tuple[float, int]:
    """The reference path: ``johansen_test`` (NaN, -1 for a constant leg or a failing test)."""
    if (np.ptp(system, axis=0) == 0).any():
        return np.nan, -1
    try:
        result = johansen_test(system, det_order=0, max_k_ar_diff=max_k_ar_diff)
    except (ValueError, np.linalg.LinAlgError):
        return np.nan, -1
    return float(result.trace_stat[0]), result.k_ar_diff


def _validated_directions(y: np.ndarray, x: np.ndarray, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """``y`` and ``x`` as int64 vectors of the same length, of valid and distinct symbol indices."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    if len(y) != len(x):
        raise ValueError("y and x must have the same length")
    if len(y) and (min(y.min(), x.min()) < 0 or max(y.max(), x.max()) >= n_symbols):
        raise ValueError(f"symbol indices must be in 0..{n_symbols - 1}")
    if (y == x).any():
        raise ValueError("a direction needs two different symbols")
    return y, x


def _validated(log_prices: np.ndarray, y: np.ndarray, x: np.ndarray, holdout_bars: int,
               max_k_ar_diff: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inputs as arrays, or ValueError for what would make every direction's reference computation fail."""
    log_prices = np.asarray(log_prices, dtype=np.float64)
    if log_prices.ndim != 2:
        raise ValueError("log_prices must be a 2-D (bars, symbols) array")
    n_bars, n_symbols = log_prices.shape
    y, x = _validated_directions(y, x, n_symbols)
    if not 4 <= holdout_bars <= n_bars - 2:
        raise ValueError(f"holdout_bars must be in 4..{n_bars - 2} (adfuller needs 4, the formation fit 2 bars)")
    if max_k_ar_diff < 0 or n_bars - max_k_ar_diff - 1 <= 2 * (max_k_ar_diff + 1) + 1:
        raise ValueError(f"{n_bars} observations are too few for max_k_ar_diff={max_k_ar_diff}")
    used = np.zeros(n_symbols, dtype=bool)  # a mask, not np.union1d: that imports numpy.ma (30 ms) on first use
    used[y] = used[x] = True
    if not np.isfinite(log_prices[:, used]).all():
        raise ValueError("log_prices must be finite (no NaN or inf) in the columns used")
    return log_prices, y, x


def _adf_all(log_prices: np.ndarray, y: np.ndarray, x: np.ndarray, holdout_bars: int,
             block_size: int) -> tuple[np.ndarray, ...]:
    """Formation fit and held-out ADF of every direction: (beta, alpha, statistic, lag)."""
    used, local = np.unique(np.concatenate((y, x)), return_inverse=True)
    local_y, local_x = local[: len(y)], local[len(y) :]
    prices = log_prices[:, used]
    beta, alpha = _formation_fit(prices[:-holdout_bars], local_y, local_x)
    holdout, maxlag = prices[-holdout_bars:], holdout_maxlag(holdout_bars)
    stat, lag = np.full(len(y), np.nan), np.full(len(y), -1, dtype=np.int64)
    reliable = np.zeros(len(y), dtype=bool)
    defined = np.flatnonzero(np.isfinite(beta))
    for start in range(0, len(defined), block_size):
        block = defined[start : start + block_size]
        stat[block], lag[block], reliable[block] = _holdout_adf(
            holdout, local_y[block], local_x[block], beta[block], alpha[block], maxlag
        )
    for index in np.flatnonzero(~reliable):
        beta[index], alpha[index], spread = _reference_spread(log_prices[:, y[index]], log_prices[:, x[index]],
                                                              holdout_bars)
        stat[index], lag[index] = adf_constant_single(spread, maxlag)
    return beta, alpha, stat, lag


def _johansen_all(log_prices: np.ndarray, y: np.ndarray, x: np.ndarray, max_k_ar_diff: int,
                  block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Johansen trace and lag order per direction, computed once per unordered pair."""
    pairs, inverse = np.unique(np.column_stack((np.minimum(y, x), np.maximum(y, x))), axis=0, return_inverse=True)
    trace, k_ar_diff = np.full(len(pairs), np.nan), np.full(len(pairs), -1, dtype=np.int64)
    reliable = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), block_size):
        block = slice(start, start + block_size)
        trace[block], k_ar_diff[block], reliable[block] = _johansen_systems(
            log_prices, pairs[block, 0], pairs[block, 1], max_k_ar_diff
        )
    for index in np.flatnonzero(~reliable):
        trace[index], k_ar_diff[index] = _johansen_single(log_prices[:, pairs[index]], max_k_ar_diff)
    inverse = inverse.reshape(-1)
    return trace[inverse], k_ar_diff[inverse]


def confirm_batch(
    log_prices: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    *,
    holdout_bars: int,
    max_pvalue: float,
    max_k_ar_diff: int = DEFAULT_MAX_K_AR_DIFF,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> ConfirmationBatch:
    """``confirm_out_of_sample`` for every direction ``(y[i], x[i])`` (column indices of ``log_prices``).

    ``log_prices`` is (bars, symbols), finite in the columns used. ``max_k_ar_diff`` bounds the Johansen lag
    search (``johansen.select_k_ar_diff``). ``block_size`` directions (or pairs) are processed together; peak
    memory is about ``block_size * bars * 60`` bytes (28 MiB for 256 x 2,000; larger blocks are no faster).
    Raises ValueError where ``confirm_out_of_sample`` would fail for every direction (too few bars for the
    held-out ADF, the formation fit or the Johansen lag search).
    """
    if block_size < 1:
        raise ValueError("block_size must be positive")
    log_prices, y, x = _validated(log_prices, y, x, holdout_bars, max_k_ar_diff)
    beta, alpha, stat, lag = _adf_all(log_prices, y, x, holdout_bars, block_size)
    pvalue = mackinnon_pvalue(stat, "c", n_series=1)
    trace, k_ar_diff = _johansen_all(log_prices, y, x, max_k_ar_diff, block_size)
    passed = trace > JOHANSEN_CRITICAL_95
    return ConfirmationBatch(
        y_index=y, x_index=x, confirmed=(pvalue <= max_pvalue) & passed, formation_hedge_ratio=beta,
        formation_intercept=alpha, holdout_adf_stat=stat, holdout_pvalue=pvalue, holdout_lag=lag,
        holdout_maxlag=holdout_maxlag(holdout_bars), johansen_trace=trace,
        johansen_critical_95=np.full(len(y), JOHANSEN_CRITICAL_95), johansen_passed=passed,
        johansen_k_ar_diff=k_ar_diff,
    )
