"""False-discovery-rate control for screens that test many pairs at once."""

from __future__ import annotations

import numpy as np


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) q-values (FDR-adjusted p-values) for independent tests.

    With the m p-values sorted ascending, ``q_(k) = min_{j >= k} p_(j) m / j``
    capped at 1 (the step-up procedure: rejecting every test with ``q <= alpha``
    controls the FDR at ``alpha``). Returned in the input order.

    Matches ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``
    exactly for finite input, using the same operations (division by
    ``rank / m``, reverse running minimum). Tied p-values get equal q-values.
    NaN p-values are left out of the family (m counts only the others) and get
    NaN q-values; statsmodels has no defined behaviour for them.
    """
    pvalues = np.asarray(pvalues, dtype=np.float64)
    if pvalues.ndim != 1:
        raise ValueError("pvalues must be 1-dimensional")
    qvalues = np.full(pvalues.shape, np.nan)
    present = np.flatnonzero(~np.isnan(pvalues))
    n_tests = len(present)
    if n_tests == 0:
        return qvalues
    order = present[np.argsort(pvalues[present])]
    rank_fraction = np.arange(1, n_tests + 1) / float(n_tests)
    step_up = np.minimum.accumulate((pvalues[order] / rank_fraction)[::-1])[::-1]
    qvalues[order] = np.minimum(step_up, 1.0)
    return qvalues
