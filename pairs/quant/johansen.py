"""Johansen cointegration test for confirming a candidate pair.

``johansen_test`` reproduces ``statsmodels.tsa.vector_ar.vecm.coint_johansen``
(statsmodels 0.15) for one or two series: the trace statistics (``lr1``), the
maximum-eigenvalue statistics (``lr2``), the eigenvalues and the critical
values (``cvt``, ``cvm``; MacKinnon, Haug and Michelis 1999 via johdist, as
tabulated by LeSage and statsmodels) at 90 %, 95 % and 99 %.

Procedure (Johansen 1988; Lütkepohl 2005, ch. 7), with ``k = k_ar_diff``:

1. Remove the deterministic part of the levels: nothing for ``det_order=-1``,
   the mean for 0, a least-squares line for 1.
2. ``r0`` = residuals of the differences ``dY_t`` and ``rk`` = residuals of the
   lagged levels on the lagged differences ``dY_{t-1..t-k}`` (and, unless
   ``det_order=-1``, a constant). Like statsmodels, the level regressor is
   ``Y_{t-k}``; this spans the same space as ``Y_{t-1}`` once the lagged
   differences are projected out, so the statistics are those of the usual
   ``Y_{t-1}`` form.
3. The eigenvalues are the squared canonical correlations between ``rk`` and
   ``r0``, computed here from the SVD of ``Q_k' Q_0`` (thin QR factors), which
   is the same quantity statsmodels obtains from ``eig(Skk^-1 Sk0 S00^-1 S0k)``
   but without forming inverses.
4. ``trace[r] = -n sum_{i>=r} log(1 - lambda_i)`` and
   ``max_eig[r] = -n log(1 - lambda_r)`` with ``n`` the number of rows used.

``select_k_ar_diff`` picks ``k`` as the minimum-AIC VAR in levels with a
constant and ``p = k + 1`` lags, all orders fitted on the same sample
(``VAR(series).select_order(max_k + 1, trend="c")`` restricted to ``p >= 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Critical values [90 %, 95 %, 99 %] by det_order, for 1 and 2 series left in the
# null (rows). MacKinnon, Haug and Michelis (1999), as in statsmodels.tsa.coint_tables.
_TRACE_CRITICAL: dict[int, np.ndarray] = {
    -1: np.array([[2.9762, 4.1296, 6.9406], [10.4741, 12.3212, 16.364]]),
    0: np.array([[2.7055, 3.8415, 6.6349], [13.4294, 15.4943, 19.9349]]),
    1: np.array([[2.7055, 3.8415, 6.6349], [16.1619, 18.3985, 23.1485]]),
}
_MAX_EIG_CRITICAL: dict[int, np.ndarray] = {
    -1: np.array([[2.9762, 4.1296, 6.9406], [9.4748, 11.2246, 15.0923]]),
    0: np.array([[2.7055, 3.8415, 6.6349], [12.2971, 14.2639, 18.52]]),
    1: np.array([[2.7055, 3.8415, 6.6349], [15.0006, 17.1481, 21.7465]]),
}
_SIGNIFICANCE_COLUMN = {0.10: 0, 0.05: 1, 0.01: 2}

# Half a day of hourly bars: enough for intraday return dynamics, and the AIC
# search costs one small least-squares fit per candidate order.
DEFAULT_MAX_K_AR_DIFF = 12


@dataclass(frozen=True)
class JohansenResult:
    """Johansen test of a system of ``n_series`` (1 or 2) series.

    ``trace_stat[r]`` / ``max_eig_stat[r]`` test the null "rank <= r" (rows of the
    critical-value arrays likewise; columns are 90 %, 95 %, 99 %).
    ``cointegrating_vector`` is the eigenvector of the largest eigenvalue scaled
    to a first element of 1, so for two series ``(y, x)`` the spread is
    ``y + v[1] x`` and the Johansen hedge ratio is ``-v[1]``.
    """

    trace_stat: np.ndarray
    trace_critical_values: np.ndarray
    max_eig_stat: np.ndarray
    max_eig_critical_values: np.ndarray
    eigenvalues: np.ndarray
    cointegrating_vector: np.ndarray
    k_ar_diff: int
    det_order: int
    nobs: int

    def trace_rank(self, significance: float = 0.05) -> int:
        """Cointegration rank from the sequential trace test at 10 %, 5 % or 1 %."""
        if significance not in _SIGNIFICANCE_COLUMN:
            raise ValueError(f"significance must be one of {sorted(_SIGNIFICANCE_COLUMN)}")
        critical = self.trace_critical_values[:, _SIGNIFICANCE_COLUMN[significance]]
        below = np.flatnonzero(self.trace_stat < critical)
        return int(below[0]) if below.size else len(self.trace_stat)


def _as_system(series: np.ndarray) -> np.ndarray:
    system = np.asarray(series, dtype=np.float64)
    if system.ndim == 1:
        system = system[:, None]
    if system.ndim != 2 or not 1 <= system.shape[1] <= 2:
        raise ValueError("series must be a (T,) or (T, 2) array")
    if not np.isfinite(system).all():
        raise ValueError("series must be finite")
    return system


def _detrend(values: np.ndarray, order: int) -> np.ndarray:
    """Residuals of a least-squares polynomial of ``order`` in time (-1: unchanged)."""
    if order == -1:
        return values
    time_basis = np.vander(np.linspace(-1, 1, len(values)), order + 1)
    coefficients, *_ = np.linalg.lstsq(time_basis, values, rcond=None)
    return values - time_basis @ coefficients


def _lagged_differences(differences: np.ndarray, k_ar_diff: int) -> np.ndarray:
    """Columns dY_{t-1}, ..., dY_{t-k} for the rows t = k .. len-1."""
    n_rows = len(differences) - k_ar_diff
    return np.hstack(
        [differences[k_ar_diff - lag : k_ar_diff - lag + n_rows] for lag in range(1, k_ar_diff + 1)]
        or [np.empty((n_rows, 0))]
    )


def _residuals_on(values: np.ndarray, basis: np.ndarray) -> np.ndarray:
    if basis.shape[1] == 0:
        return values
    orthonormal, _ = np.linalg.qr(basis)
    return values - orthonormal @ (orthonormal.T @ values)


def johansen_test(
    series: np.ndarray,
    *,
    det_order: int = 0,
    k_ar_diff: int | None = None,
    max_k_ar_diff: int = DEFAULT_MAX_K_AR_DIFF,
) -> JohansenResult:
    """Johansen trace and maximum-eigenvalue tests (``coint_johansen(series, det_order, k_ar_diff)``).

    ``series`` is ``(T, 2)`` (e.g. the two log-price legs of a pair).
    ``det_order``: -1 no deterministic terms, 0 constant (default), 1 linear
    trend. ``k_ar_diff``: number of lagged differences; when None it is chosen
    by ``select_k_ar_diff(series, max_k_ar_diff)``.
    """
    if det_order not in _TRACE_CRITICAL:
        raise ValueError("det_order must be -1, 0 or 1")
    system = _as_system(series)
    if k_ar_diff is None:
        k_ar_diff = select_k_ar_diff(system, max_k_ar_diff)
    if k_ar_diff < 0:
        raise ValueError("k_ar_diff must be >= 0")
    n_series = system.shape[1]

    levels = _detrend(system, det_order)
    differences = np.diff(levels, axis=0)
    n_rows = len(differences) - k_ar_diff
    conditioning = _lagged_differences(differences, k_ar_diff)
    if det_order > -1:
        # statsmodels demeans every regression input; projecting out a constant is the same.
        conditioning = np.column_stack((np.ones(n_rows), conditioning))
    if n_rows <= conditioning.shape[1] + n_series:
        raise ValueError(f"{len(system)} observations are too few for k_ar_diff={k_ar_diff}")
    change_resid = _residuals_on(differences[k_ar_diff:], conditioning)
    level_resid = _residuals_on(levels[1 : 1 + n_rows], conditioning)

    level_q, level_r = np.linalg.qr(level_resid)
    change_q, _ = np.linalg.qr(change_resid)
    left, canonical_correlations, _ = np.linalg.svd(level_q.T @ change_q)
    eigenvalues = canonical_correlations**2
    log_retained = np.log1p(-eigenvalues)
    trace_stat = -n_rows * np.cumsum(log_retained[::-1])[::-1]
    max_eig_stat = -n_rows * log_retained

    # Eigenvector of the largest eigenvalue in the original coordinates.
    leading = np.linalg.solve(level_r, left[:, 0])
    rows_left = np.arange(n_series, 0, -1) - 1
    return JohansenResult(
        trace_stat=trace_stat,
        trace_critical_values=_TRACE_CRITICAL[det_order][rows_left],
        max_eig_stat=max_eig_stat,
        max_eig_critical_values=_MAX_EIG_CRITICAL[det_order][rows_left],
        eigenvalues=eigenvalues,
        cointegrating_vector=leading / leading[0],
        k_ar_diff=k_ar_diff,
        det_order=det_order,
        nobs=n_rows,
    )


def select_k_ar_diff(series: np.ndarray, max_k_ar_diff: int = DEFAULT_MAX_K_AR_DIFF) -> int:
    """Number of lagged differences minimising the AIC of the VAR in levels.

    For ``k = 0..max_k_ar_diff`` a VAR with ``k + 1`` lags and a constant is
    fitted to the rows ``t = max_k_ar_diff + 1 .. T-1`` (one sample for every
    order), ``AIC = log det(Sigma_ML) + 2 (k + 1) n_series^2 / n`` (the
    constant's parameters are the same for every order and do not affect the
    choice); the smallest wins, ties to the smaller k. This is the AIC of
    ``VAR(series).select_order(max_k_ar_diff + 1, trend="c")`` for ``p = k + 1``.
    ``vecm.select_order(..., deterministic="ci")`` intends the same but adds the
    constant twice (as trend and as exog); its least-squares designs are then
    rank-deficient and some of its AIC values come out slightly wrong, so its
    choice can differ.
    """
    system = _as_system(series)
    n_obs, n_series = system.shape
    first_row = max_k_ar_diff + 1
    n_rows = n_obs - first_row
    if max_k_ar_diff < 0 or n_rows <= (max_k_ar_diff + 1) * n_series + 1:
        raise ValueError(f"{n_obs} observations are too few for max_k_ar_diff={max_k_ar_diff}")
    target = system[first_row:]
    criteria = []
    for k_ar_diff in range(max_k_ar_diff + 1):
        n_lags = k_ar_diff + 1
        design = np.column_stack(
            [np.ones(n_rows)] + [system[first_row - lag : n_obs - lag] for lag in range(1, n_lags + 1)]
        )
        coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
        resid = target - design @ coefficients
        _, log_det = np.linalg.slogdet(resid.T @ resid / n_rows)
        criteria.append(log_det + 2.0 * n_lags * n_series**2 / n_rows)
    return int(np.argmin(criteria))
