"""A batched ADF test for many spreads at once, with a fixed lag order. Pure: numpy only.

Used for the "ADF of the recent spread" statistic of every graded pair: the regression
``ds_t = a + g s_{t-1} + sum_{i=1..p} f_i ds_{t-i} + e_t`` with a constant and ``p`` lagged differences, the
t-statistic of g, and MacKinnon's p-value for one series with a constant (as adfuller(regression='c',
maxlag=p, autolag=None)). A fixed lag keeps every pair's regression the same size, so all are solved together.
"""

from __future__ import annotations

import numpy as np

from pairs.quant.mackinnon import mackinnon_pvalue


def adf_fixed_lag(spreads: np.ndarray, *, lags: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p-value) per column of a (T, M) array of spreads; NaN where a column is degenerate."""
    values = np.asarray(spreads, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    changes = np.diff(values, axis=0)
    n = changes.shape[0] - lags
    if n <= lags + 3:
        raise ValueError(f"{values.shape[0]} bars are too few for an ADF regression with {lags} lag(s)")
    target = changes[lags:]  # (n, M)
    columns = [values[lags:-1], np.ones_like(target)]  # level s_{t-1}, constant
    columns += [changes[lags - i : -i] for i in range(1, lags + 1)]
    design = np.stack(columns, axis=-1).transpose(1, 0, 2)  # (M, n, k)
    gram = design.transpose(0, 2, 1) @ design  # (M, k, k)
    moment = design.transpose(0, 2, 1) @ target.T[:, :, None]  # (M, k, 1)
    k = design.shape[2]
    statistic = np.full(values.shape[1], np.nan)
    try:
        inverse = np.linalg.inv(gram)
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(gram)
    coefficients = (inverse @ moment)[:, :, 0]
    residuals = target.T - np.einsum("mnk,mk->mn", design, coefficients)
    sigma2 = (residuals**2).sum(axis=1) / (n - k)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = coefficients[:, 0] / np.sqrt(sigma2 * inverse[:, 0, 0])
    statistic = np.where(np.isfinite(statistic), statistic, np.nan)
    pvalue = np.full_like(statistic, np.nan)
    finite = np.isfinite(statistic)
    pvalue[finite] = mackinnon_pvalue(statistic[finite], regression="c", n_series=1)
    return statistic, pvalue
