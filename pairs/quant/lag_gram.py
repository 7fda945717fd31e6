"""Cross-product (Gram) matrices of lag-augmented regressions, for many small systems of series at once.

A *system* is ``c`` (1 or 2) series of ``R`` observations: levels ``l_t`` and changes ``d_t = l_{t+1} - l_t``
(``t = 0..R-2``). The augmented Dickey-Fuller regression (``c = 1``), the VAR used to choose the Johansen lag
order and the Johansen regressions themselves (``c = 2``) all regress the change ``d_t`` on a constant, the level
``l_t`` and the lagged changes, on rows ``t = s..R-2``. Their design rows are sub-rows of

    [1, l_t, d_{t-1}, ..., d_{t-p}, d_t]        (``l`` and each ``d`` are c columns; ``d_t``, the target, last)

and every regression needed is a set of columns of that design over a first row ``s <= p``.

``lag_grams`` gives, for a batch of systems, the Gram matrix of that design for any first row without forming
the designs, the way ``pairs.quant.cointegration`` does for Engle-Granger: the change-by-change block is
Toeplitz in the lag distance, built from the lagged cross sums ``sum_u d_u d_{u-k}'`` (one batched product per
lag, over the full range with changes before 0 taken as 0); the level-by-change sums follow from them by a
recursion in the lag (``l_t = l_{t-1} + d_{t-1}``), so they cost one product in all; the rows past ``R-2`` that
the lagged sums include are subtracted (``tail``), and a regression starting at row ``s`` subtracts the products
of its ``s`` missing first rows (``head``). Levels are centred per series first; the regressions all contain the
constant, so this changes nothing but the rounding, for the better.

``nested_log_dets`` reads, from one Cholesky factorisation of the Gram in that column order, the residual
cross-product of the target for every lag order ``0..p`` at once (the regressions ``[1, l_t, d_{t-1..t-k}]`` are
prefixes of the design); ``final_order_gram`` reorders the Gram of a chosen lag order so that the level columns
come just before the target, with the unused lag columns decoupled (zero off the diagonal, one on it), so that one
more factorisation gives the level coefficients' statistics. Loops here run over lags, never over systems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairs.quant.cointegration import _cholesky

# A Cholesky pivot below this fraction of its diagonal entry (1 - R^2 of a column on the ones before it) means
# the normal equations could lose more than ~1e-10 relative accuracy: the caller recomputes such systems on
# explicit designs.
MIN_PIVOT_RATIO = 1e-6


@dataclass(frozen=True)
class LagGrams:
    """Gram matrices of the design ``[1, l_t, d_{t-1}, ..., d_{t-p}, d_t]`` of a batch of systems.

    ``common[s]`` is the Gram over rows ``t = 0..R-2`` with ``d_u = 0`` for ``u < 0``; ``head[s, r]`` is the
    design row ``t = r`` (``r < p``) with the same padding, so the Gram of rows ``t = f..R-2`` is
    ``common - head[:f]' head[:f]`` (``gram``). Column blocks: 0 the constant, then the ``c`` level columns,
    then ``c`` columns per lag ``1..p``, then the ``c`` target columns.
    """

    common: np.ndarray
    head: np.ndarray
    n_channels: int
    max_lag: int
    n_rows: int

    @property
    def size(self) -> int:
        return 1 + self.n_channels * (self.max_lag + 2)

    def gram(self, first_row: int | np.ndarray) -> np.ndarray:
        """Gram over the rows ``t = first_row..R-2`` (``first_row <= max_lag``, one value or one per system)."""
        first = np.broadcast_to(np.asarray(first_row), (len(self.common),))
        dropped = self.head * (np.arange(self.max_lag)[None, :] < first[:, None])[:, :, None]
        return self.common - dropped.transpose(0, 2, 1) @ dropped


def _lag_blocks(diff_cross: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """The change-by-change part of the Gram, blocks in the order of ``lags``, from ``diff_cross[k]``."""
    distance = lags[None, :] - lags[:, None]
    # Block (i, j) = sum_t d_{t-i} d_{t-j}' = C_{j-i} for j >= i and C_{i-j}' otherwise.
    both = np.stack((diff_cross, diff_cross.swapaxes(-1, -2)))
    blocks = both[(distance < 0).astype(int), np.abs(distance)]  # (b, b, systems, c, c)
    n_systems, c = diff_cross.shape[1], diff_cross.shape[-1]
    return blocks.transpose(2, 0, 3, 1, 4).reshape(n_systems, len(lags) * c, len(lags) * c)


def _padded_rows(diffs: np.ndarray, rows: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Values ``d_{t-j}`` for ``t`` in ``rows``, ``j`` in ``lags`` (0 outside the data): (systems, rows, lags * c)."""
    n_systems, c, n_diffs = diffs.shape
    index = rows[:, None] - lags[None, :]
    inside = (index >= 0) & (index < n_diffs)
    values = diffs[:, :, np.clip(index, 0, n_diffs - 1)] * inside  # (systems, c, rows, lags)
    return values.transpose(0, 2, 3, 1).reshape(n_systems, len(rows), len(lags) * c)


def lag_grams(levels: np.ndarray, max_lag: int) -> LagGrams:
    """Gram matrices of ``[1, l_t, d_{t-1..t-p}, d_t]`` for systems ``levels`` of shape (systems, c, R).

    Cost: ``p + 2`` batched products of (c x R) by (R x c) per system, plus O(p^2 c^2) per system.
    """
    levels = np.asarray(levels, dtype=np.float64)
    n_systems, c, n_levels = levels.shape
    n_rows = n_levels - 1
    if not 0 <= max_lag < n_rows:
        raise ValueError(f"max_lag must be in 0..{n_rows - 1} for {n_levels} observations")
    diffs = np.diff(levels, axis=2)
    centred = levels - levels.mean(axis=2, keepdims=True)
    level = centred[:, :, :n_rows]
    # C_k = sum_u d_u d_{u-k}' (u <= R-2): one product per lag.
    diff_cross = np.stack([diffs[:, :, k:] @ diffs[:, :, : n_rows - k].transpose(0, 2, 1) for k in range(max_lag + 1)])
    # B_k = sum_{t=k}^{R-2} l_t d_{t-k}'. As l_t = l_{t-1} + d_{t-1}: B_k = B_{k-1} + C_{k-1} - l_{R-1} d_{R-1-k}'
    # (each step adds a rounding error of order eps |l| |d|, far below the entries' n |l| |d| scale).
    level_cross = np.empty_like(diff_cross)
    level_cross[0] = level @ diffs.transpose(0, 2, 1)
    last_level = centred[:, :, -1:]
    for k in range(1, max_lag + 1):
        level_cross[k] = level_cross[k - 1] + diff_cross[k - 1] - last_level @ diffs[:, None, :, n_rows - k]

    lags = np.r_[1 : max_lag + 1, 0]  # lag of each change block, target last
    size = 1 + c * (max_lag + 2)
    common = np.empty((n_systems, size, size))
    common[:, 0, 0] = n_rows
    common[:, 0, 1 : 1 + c] = level.sum(axis=2)
    # sum_{t=0}^{R-2} d_{t-j} = sum of the first R-1-j changes = l_{R-1-j} - l_0.
    first_sums = levels[:, :, n_rows - lags] - levels[:, :, :1]  # (systems, c, blocks)
    common[:, 0, 1 + c :] = first_sums.transpose(0, 2, 1).reshape(n_systems, -1)
    common[:, 1 : 1 + c, 1 : 1 + c] = level @ level.transpose(0, 2, 1)
    common[:, 1 : 1 + c, 1 + c :] = level_cross[lags].transpose(1, 2, 0, 3).reshape(n_systems, c, -1)
    common[:, 1 + c :, 1 + c :] = _lag_blocks(diff_cross, lags)
    # Rows t = R-1..R-2+p are in the lagged sums through their lagged columns only: remove them.
    tail = _padded_rows(diffs, n_rows + np.arange(max_lag), lags[:-1])
    common[:, 1 + c : 1 + c * (max_lag + 1), 1 + c : 1 + c * (max_lag + 1)] -= tail.transpose(0, 2, 1) @ tail
    lower = np.tril_indices(size, -1)
    common[:, lower[0], lower[1]] = common[:, lower[1], lower[0]]

    head = np.empty((n_systems, max_lag, size))
    head[:, :, 0] = 1.0
    head[:, :, 1 : 1 + c] = level[:, :, :max_lag].transpose(0, 2, 1)
    head[:, :, 1 + c :] = _padded_rows(diffs, np.arange(max_lag), lags)
    return LagGrams(common=common, head=head, n_channels=c, max_lag=max_lag, n_rows=n_rows)


def factorise(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched lower Cholesky factors and a mask of the systems whose normal equations are trustworthy.

    Matrices with a non-finite entry or a non-positive diagonal are not factorised (identity instead), so the
    one-by-one retry of ``_cholesky`` stays rare; the mask is False for them, for failed factorisations and for
    pivots below ``MIN_PIVOT_RATIO`` of their diagonal.
    """
    diagonal = np.arange(matrices.shape[-1])
    diagonals = matrices[:, diagonal, diagonal]
    usable = np.isfinite(matrices).all(axis=(1, 2)) & (diagonals > 0).all(axis=1)
    safe = np.where(usable[:, None, None], matrices, np.eye(matrices.shape[-1]))
    factors, ok = _cholesky(safe)
    with np.errstate(divide="ignore", invalid="ignore"):
        pivot_ratio = np.min(factors[:, diagonal, diagonal] ** 2 / np.where(usable[:, None], diagonals, 1.0), axis=1)
    return factors, usable & ok & (pivot_ratio > MIN_PIVOT_RATIO)


def log_det_unit_plus(matrices: np.ndarray) -> np.ndarray:
    """``log det(I + M)`` for positive semi-definite 1x1 or 2x2 ``M`` (..., c, c), without cancellation."""
    first = matrices[..., 0, 0]
    if matrices.shape[-1] == 1:
        return np.log1p(first)
    second = matrices[..., 1, 1]
    return np.log1p(first + second + (first * second - matrices[..., 0, 1] * matrices[..., 1, 0]))


def _explained(factors: np.ndarray, n_channels: int) -> np.ndarray:
    """``a_j = L_TT^{-1} L_T,j`` for every regressor column j: the target rows of the factor in target units."""
    target = factors[:, -n_channels:, :]
    return np.linalg.solve(target[:, :, -n_channels:], target[:, :, :-n_channels])


def nested_log_dets(factors: np.ndarray, n_channels: int, max_lag: int) -> np.ndarray:
    """log det of the target's residual cross-product for the regressions on ``[1, l_t, d_{t-1..t-k}]``.

    ``factors`` are Cholesky factors of Grams in ``LagGrams`` column order; returns (systems, max_lag + 1) for
    ``k = 0..max_lag``. The residual cross-product with the first q regressors is
    ``L_TT (I + sum_{j>=q} a_j a_j') L_TT'``: the part of the target the later columns would explain, added back.
    """
    c = n_channels
    explained = _explained(factors, c)  # (systems, c, regressors)
    outer = explained[:, :, None, :] * explained[:, None, :, :]  # (systems, c, c, regressors)
    from_column = np.cumsum(outer[..., ::-1], axis=-1)[..., ::-1]
    n_regressors = explained.shape[-1]
    first_unused = 1 + c + c * np.arange(max_lag + 1)
    added = np.zeros((*outer.shape[:-1], max_lag + 1))
    within = first_unused < n_regressors
    added[..., within] = from_column[..., first_unused[within]]
    diagonal = np.arange(c)
    log_det_target = 2.0 * np.log(np.abs(factors[:, -c:, -c:][:, diagonal, diagonal])).sum(axis=1)
    return log_det_target[:, None] + log_det_unit_plus(np.moveaxis(added, -1, 1))


def final_order_gram(grams: LagGrams, lag: np.ndarray) -> np.ndarray:
    """Gram of rows ``t = lag..R-2`` in the column order ``[1, d_{t-1..t-p}, l_t, d_t]``, lags past ``lag`` unused.

    Unused lag columns get a zero row and column and a unit diagonal: they then leave the factor of the other
    columns unchanged, so every system shares one matrix size whatever its lag.
    """
    c, max_lag = grams.n_channels, grams.max_lag
    gram = grams.gram(lag)
    order = np.r_[0, 1 + c : 1 + c * (max_lag + 1), 1 : 1 + c, 1 + c * (max_lag + 1) : grams.size]
    gram = gram[:, order][:, :, order]
    column_lag = np.r_[0, np.repeat(np.arange(1, max_lag + 1), c), np.zeros(2 * c, dtype=int)]
    unused = column_lag[None, :] > np.asarray(lag)[:, None]
    gram[unused[:, :, None] | unused[:, None, :]] = 0.0
    diagonal = np.arange(grams.size)
    gram[:, diagonal, diagonal] = np.where(unused, 1.0, gram[:, diagonal, diagonal])
    return gram
