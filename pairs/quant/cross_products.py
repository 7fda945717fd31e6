"""Symbol-by-symbol cross products restricted to the entries a set of pairs reads.

Every pairwise statistic of the screen is a quadratic form of symbol matrices ``M[a, b] = sum_t u_{a,t} v_{b,t}``:
the pair (y, x) reads ``M[y, y]``, ``M[y, x]``, ``M[x, y]`` and ``M[x, x]``. A fanned-out block of the screen holds
the pairs between two groups of symbols, both directions (``pairs.quant.screening.split_pairs``): it reads the two
off-diagonal blocks and the diagonal, which cost half of the full product of its symbols, and nothing within a
group. Where the pairs are not of that shape (a whole universe, every direction) the full product is computed.

Pure numpy: no Django, no ccxt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sides:
    """Two disjoint groups of column indices such that every pair joins one to the other."""

    first: np.ndarray
    second: np.ndarray


def bipartite_sides(pairs: np.ndarray, n_symbols: int) -> Sides | None:
    """The two sides of ``pairs`` ((P, 2) indices into ``n_symbols`` columns, every column used), or None when some
    pair lies within one side (then every entry may be read).

    The second side is taken as the partners of the first pair's y; the answer is checked against every pair, so a
    wrong guess only costs the saving, never a missing entry.
    """
    if len(pairs) == 0 or n_symbols < 2:
        return None
    anchor = pairs[0, 0]
    partners = np.concatenate((pairs[pairs[:, 0] == anchor, 1], pairs[pairs[:, 1] == anchor, 0]))
    in_second = np.zeros(n_symbols, dtype=bool)
    in_second[partners] = True
    if not np.all(in_second[pairs[:, 0]] ^ in_second[pairs[:, 1]]):
        return None
    return Sides(first=np.flatnonzero(~in_second), second=np.flatnonzero(in_second))


def cross_products(left: np.ndarray, right: np.ndarray, sides: Sides | None, out: np.ndarray | None = None
                   ) -> np.ndarray:
    """``left.T @ right`` for (T, N) arrays. With ``sides``, only the entries pairs across them read: the two
    off-diagonal blocks and the diagonal; the within-side entries are zero. ``out``: an (N, N) array to fill."""
    if sides is None:
        return np.matmul(left.T, right, out=out)
    n_symbols = left.shape[1]
    if out is None:
        out = np.zeros((n_symbols, n_symbols))
    else:
        out[...] = 0.0
    first, second = sides.first, sides.second
    across = left[:, first].T @ right[:, second]
    out[np.ix_(first, second)] = across
    # A product of a matrix with itself is symmetric: its other block is the transpose (numpy's full product of a
    # matrix with itself costs half a general one, so the two blocks would cost what the whole did).
    out[np.ix_(second, first)] = across.T if _same_array(left, right) else left[:, second].T @ right[:, first]
    diagonal = np.arange(n_symbols)
    out[diagonal, diagonal] = np.einsum("ti,ti->i", left, right)
    return out


def _same_array(left: np.ndarray, right: np.ndarray) -> bool:
    """The same values at the same place (one array, or two views of the same memory with the same layout)."""
    return left is right or (
        left.shape == right.shape and left.strides == right.strides and left.dtype == right.dtype
        and left.__array_interface__["data"][0] == right.__array_interface__["data"][0]
    )
