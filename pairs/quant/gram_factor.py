"""Batched Cholesky factorisations of the Engle-Granger screen's Gram stacks (``pairs.quant.cointegration``).

A stack that fails to factorise is retried matrix by matrix to find which; the smallest pivot ratio of a factor
tells how ill-conditioned its normal equations were; ``_final_statistics`` refits each pair's chosen ADF lag on a
Gram only as large as that lag needs.
"""

from __future__ import annotations

import numpy as np

# Cholesky pivot over diagonal (= 1 - R^2 of a column on the earlier ones);
# below this the normal equations are too ill-conditioned to trust.
_MIN_PIVOT_RATIO = 1e-6


def _cholesky(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched lower Cholesky factors and a mask of the matrices that factorised."""
    try:
        return np.linalg.cholesky(matrices), np.ones(len(matrices), dtype=bool)
    except np.linalg.LinAlgError:
        # numpy fails the whole stack for one bad matrix; find which (rare path).
        factors = np.empty_like(matrices)
        ok = np.ones(len(matrices), dtype=bool)
        for i, matrix in enumerate(matrices):
            try:
                factors[i] = np.linalg.cholesky(matrix)
            except np.linalg.LinAlgError:
                factors[i] = np.eye(matrix.shape[0])
                ok[i] = False
        return factors, ok


def _min_pivot_ratio(factors: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    diagonal = np.arange(matrices.shape[-1])
    return np.min(factors[:, diagonal, diagonal] ** 2 / matrices[:, diagonal, diagonal], axis=1)


# Largest lags of the refit's buckets (with maxlag on top): a pair's final regression has lag + 2 columns, and a
# bucket's Gram matrices are only as large as its largest lag needs (#18: padding every refit to maxlag + 2 columns
# made it a third of the screen; chosen lags on hourly closes spread over 0..maxlag).
_REFIT_BUCKET_LAGS = (3, 8, 15)


def _final_statistics(common: np.ndarray, head: np.ndarray, lag: np.ndarray, testable: np.ndarray, maxlag: int,
                      n_obs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADF statistic of each pair's chosen lag refitted on its own sample t = lag..T-2 (only head rows t < lag are
    left out of ``common``), with whether its Cholesky factorisation held and its smallest pivot ratio passed."""
    n_pairs = len(lag)
    adf_stat = np.full(n_pairs, np.nan)
    ok = np.zeros(n_pairs, dtype=bool)
    pivot_ok = np.zeros(n_pairs, dtype=bool)
    low = 0
    for high in sorted({b for b in _REFIT_BUCKET_LAGS if b < maxlag} | {maxlag}):
        members = np.flatnonzero((lag >= low) & (lag <= high))
        low = high + 1
        if not len(members):
            continue
        # Order [d_{t-1}, ..., d_{t-high}, e_t, d_t] puts e_t last among the regressors, so its t-value is
        # factor[target, e_t] / sigma.
        order = np.r_[1 : high + 1, 0, maxlag + 1]
        member_lag = lag[members]
        rows = head.take(members, axis=0)[:, :high].take(order, axis=2)
        rows *= (np.arange(high)[None, :] < member_lag[:, None])[:, :, None]
        size = common.shape[-1]
        # Two takes of flat indices: a 3-D fancy index costs twice as much.
        gram = common.reshape(n_pairs, size * size).take(members, axis=0).take(
            (order[:, None] * size + order[None, :]).ravel(), axis=1).reshape(len(members), high + 2, high + 2)
        gram -= rows.transpose(0, 2, 1) @ rows
        # Decouple the lag columns beyond the chosen lag: zero off-diagonal, unit diagonal.
        unused = np.zeros((len(members), high + 2), dtype=bool)
        unused[:, :high] = np.arange(1, high + 1)[None, :] > member_lag[:, None]
        gram[unused[:, :, None] | unused[:, None, :]] = 0.0
        diagonal = np.arange(high + 2)
        gram[:, diagonal, diagonal] = np.where(unused, 1.0, gram[:, diagonal, diagonal])
        gram[~testable[members]] = np.eye(high + 2)
        factor, factored = _cholesky(gram)
        # nobs = T - 1 - lag rows, lag + 1 regressors.
        sigma = factor[:, -1, -1] / np.sqrt(n_obs - 2 * member_lag - 2)
        adf_stat[members] = factor[:, -1, -2] / sigma
        ok[members] = factored
        pivot_ok[members] = _min_pivot_ratio(factor, gram) > _MIN_PIVOT_RATIO
    return adf_stat, ok, pivot_ok
