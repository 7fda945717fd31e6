"""The cointegration screen of a whole universe: pure numerics over a (bars x symbols) matrix of log closes.

Steps, all batched over pairs:
1. Engle-Granger for every requested direction (``engle_granger_batch``: equal to statsmodels' coint).
2. Spread statistics for every direction from per-symbol moment matrices, never materialising the spreads.
   The spread ``s = y - a - b x`` is linear in the legs, so its variance, mean, last value, AR(1) slope and the
   correlation of the legs' returns are quadratic forms in N x N moment matrices: O(N^2) memory for any number
   of pairs. Gives half-life, spread mean and std, current z-score and return correlation for every test.
3. Hurst exponent and mean crossings need the series, T x 99 operations per direction for the Hurst lags: they
   are computed (``add_series_statistics``) only for the directions that pass the run's tests, the ones that can
   become pairs; NaN / -1 for the rest.
4. One direction per unordered pair and Benjamini-Hochberg q-values over the run (``merge_and_adjust``; done
   once the blocks of a fanned-out screen are merged). Engle-Granger is not symmetric: y on x and x on y are two
   tests of one hypothesis (the two series are cointegrated), so counting both would let a pair be tested,
   graded and promoted twice and would inflate the number of tests the false-discovery control divides by.
   ``preferred_directions`` keeps, for each unordered pair, the direction with the lower Engle-Granger p-value
   (ties: the more negative ADF statistic, then the lower y index), a rule that reads the formation window only,
   before any confirmation or backtest. Keeping the lower of two p-values is a choice made after seeing both, and
   the minimum of two p-values is not a p-value (on independent random walks P(min < 0.01) is about 0.020, not
   0.01), so the p-value a pair enters the multiple-testing family with is Bonferroni's over its two directions:
   ``family_pvalue = min(1, 2 * min(p_yx, p_xy))`` when both directions were tested, the direction's own p when
   its reverse was not (or has no p-value: ``family_pvalues``). The q-values are Benjamini-Hochberg's over the
   family p-values of the preferred directions, one per unordered pair; the other direction has neither (NaN), so
   it cannot pass. Both selection thresholds (``max_pvalue``, ``max_qvalue``: ``passing_directions``) read the
   family p-value and its q-value; ``pvalue`` stays each direction's raw Engle-Granger p-value (statsmodels'
   ``coint``), as stored and displayed.
5. Out-of-sample confirmation of candidates (``confirm_out_of_sample``): the hedge ratio is re-fitted on the
   window without its last ``confirmation_bars`` bars and its spread must be stationary on those held-out bars
   (ADF with constant, AIC lag); plus the Johansen trace test on the whole window.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, fields

import numpy as np

from pairs.quant.cointegration import all_ordered_pairs, engle_granger_batch
from pairs.quant.cross_products import Sides, bipartite_sides, cross_products
from pairs.quant.forked import forked_map
from pairs.quant.johansen import johansen_test
from pairs.quant.multiple_testing import benjamini_hochberg
from pairs.quant.spread import LN_2, hurst_exponent, mean_crossings

# Pairs per block when the series are needed (Hurst, crossings): a (2000 x 4000) float64 block is 64 MB.
SERIES_BLOCK_PAIRS = 4000


# Columns that travel as integers; every other column is float64.
_TRANSPORT_DTYPES = {"y_index": "<i8", "x_index": "<i8", "lag": "<i8", "mean_crossings": "<i8", "preferred": "|b1"}


@dataclass
class ScreenResult:
    """One entry per tested direction; arrays of equal length."""

    y_index: np.ndarray
    x_index: np.ndarray
    hedge_ratio: np.ndarray
    intercept: np.ndarray
    adf_stat: np.ndarray
    lag: np.ndarray
    pvalue: np.ndarray
    half_life: np.ndarray
    spread_mean: np.ndarray
    spread_std: np.ndarray
    zscore: np.ndarray
    return_correlation: np.ndarray
    hurst: np.ndarray
    mean_crossings: np.ndarray
    qvalue: np.ndarray | None = None
    # The direction kept for its unordered pair (``preferred_directions``); set with the q-values.
    preferred: np.ndarray | None = None
    # The p-value the pair enters the multiple-testing family with (``family_pvalues``: twice the lower of its two
    # directions' p-values, at most 1; NaN for the direction not preferred): what ``max_pvalue`` and the q-values
    # read. ``pvalue`` above is the raw Engle-Granger p-value of the direction. Set with the q-values.
    family_pvalue: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pvalue)

    def to_columns(self) -> dict[str, str]:
        """The columns as base64 text of their little-endian bytes, for JSON transport between Celery tasks: exact
        (NaN and infinities included), about 11 bytes of text per value, and decoded without a Python loop."""
        columns = {}
        for spec in fields(self):
            values = getattr(self, spec.name)
            if values is not None:
                raw = np.ascontiguousarray(values, dtype=_TRANSPORT_DTYPES.get(spec.name, "<f8"))
                columns[spec.name] = base64.b64encode(raw.tobytes()).decode("ascii")
        return columns

    @classmethod
    def from_columns(cls, columns: dict[str, str]) -> ScreenResult:
        values = {}
        for spec in fields(cls):
            column = columns.get(spec.name)
            dtype = _TRANSPORT_DTYPES.get(spec.name, "<f8")
            values[spec.name] = None if column is None else np.frombuffer(
                base64.b64decode(column), dtype=dtype).astype(_DECODED_TYPES.get(dtype, np.float64))
        return cls(**values)

    @classmethod
    def concatenate(cls, parts: list[ScreenResult]) -> ScreenResult:
        values = {}
        for spec in fields(cls):
            arrays = [getattr(p, spec.name) for p in parts]
            values[spec.name] = None if any(a is None for a in arrays) else np.concatenate(arrays)
        return cls(**values)


_DECODED_TYPES = {"<i8": np.int64, "|b1": np.bool_}


def _moments(log_prices: np.ndarray, sides: Sides | None = None) -> dict[str, np.ndarray]:
    """Per-symbol moment matrices the spread statistics are quadratic forms of (with ``sides``, only the entries
    pairs across them read: ``pairs.quant.cross_products``)."""
    levels = log_prices
    lagged = levels[:-1]
    changes = np.diff(levels, axis=0)
    lagged_centred = lagged - lagged.mean(axis=0)
    changes_centred = changes - changes.mean(axis=0)
    n_changes = changes.shape[0]
    levels_centred = levels - levels.mean(axis=0)
    return {
        "mean": levels.mean(axis=0),
        "last": levels[-1],
        # Sample covariance of levels (ddof=1): the spread's std like pandas' std().
        "cov_levels": cross_products(levels_centred, levels_centred, sides) / (levels.shape[0] - 1),
        # Sums for the AR(1) slope of the spread: cov(lagged level, change) and var(lagged level), centred.
        "lag_change": cross_products(lagged_centred, changes_centred, sides) / n_changes,
        "lag_lag": cross_products(lagged_centred, lagged_centred, sides) / n_changes,
        # Returns are the changes of log prices.
        "ret_cov": cross_products(changes_centred, changes_centred, sides) / n_changes,
    }


def _quadratic(matrix: np.ndarray, y: np.ndarray, x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(e_y - b e_x)' M (e_y - b e_x) for every pair."""
    return matrix[y, y] - beta * (matrix[y, x] + matrix[x, y]) + beta**2 * matrix[x, x]


def _spread_moment_statistics(moments, y, x, beta, alpha) -> dict[str, np.ndarray]:
    spread_mean = moments["mean"][y] - alpha - beta * moments["mean"][x]
    spread_var = _quadratic(moments["cov_levels"], y, x, beta)
    spread_std = np.sqrt(np.maximum(spread_var, 0.0))
    last_spread = moments["last"][y] - alpha - beta * moments["last"][x]
    lag_change = _quadratic(moments["lag_change"], y, x, beta)
    lag_var = _quadratic(moments["lag_lag"], y, x, beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        zscore = (last_spread - spread_mean) / spread_std
        slope = lag_change / lag_var
        persistence = np.abs(1.0 + slope)
        half_life = np.where(persistence < 1.0, -LN_2 / np.log(persistence), np.inf)
        half_life = np.where(np.isnan(slope), np.nan, half_life)
        ret = moments["ret_cov"]
        correlation = ret[y, x] / np.sqrt(ret[y, y] * ret[x, x])
    return {"spread_mean": spread_mean, "spread_std": spread_std, "zscore": zscore, "half_life": half_life,
            "return_correlation": correlation}


def screen(
    log_prices: np.ndarray,
    pairs: np.ndarray | None = None,
    *,
    series_pvalue_threshold: float | None = None,
    maxlag: int | None = None,
    processes: int = 1,
) -> ScreenResult:
    """Screen ``pairs`` (an (M, 2) array of (y, x) column indices; every ordered pair by default).

    Hurst exponent and mean crossings are computed where p <= ``series_pvalue_threshold`` (not at all when it is
    None: see ``add_series_statistics``) and are NaN / -1 elsewhere. q-values are not set here: they belong to
    the whole run (see ``merge_and_adjust``). ``processes``: forked processes sharing the Engle-Granger blocks.
    """
    log_prices = np.ascontiguousarray(log_prices, dtype=np.float64)
    if pairs is None:
        pairs = all_ordered_pairs(log_prices.shape[1])
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    eg = engle_granger_batch(log_prices, pairs, maxlag=maxlag, processes=processes)
    y, x = pairs[:, 0], pairs[:, 1]
    # The moments of the symbols the pairs use, and of their entries the pairs read: a fanned-out block touches
    # two groups of symbols, and the whole universe's moment matrices would cost it as much as the universe.
    used_symbols, local_pairs = np.unique(pairs, return_inverse=True)
    local_pairs = local_pairs.reshape(-1, 2)
    moments = _moments(log_prices[:, used_symbols], bipartite_sides(local_pairs, len(used_symbols)))
    stats = _spread_moment_statistics(moments, local_pairs[:, 0], local_pairs[:, 1], eg.hedge_ratio, eg.intercept)
    result = ScreenResult(
        y_index=y, x_index=x, hedge_ratio=eg.hedge_ratio, intercept=eg.intercept, adf_stat=eg.adf_stat,
        lag=eg.lag.astype(np.int64), pvalue=eg.pvalue, hurst=np.full(len(pairs), np.nan),
        mean_crossings=np.full(len(pairs), -1, dtype=np.int64), **stats,
    )
    if series_pvalue_threshold is not None:
        add_series_statistics(result, log_prices, np.flatnonzero(eg.pvalue <= series_pvalue_threshold))
    return result


def add_series_statistics(result: ScreenResult, log_prices: np.ndarray, selected: np.ndarray) -> None:
    """Fill in the Hurst exponent and mean crossings of the ``selected`` directions (indices into ``result``)."""
    result.hurst[selected], result.mean_crossings[selected] = _series_statistics(result, log_prices, selected)


def _series_statistics(result: ScreenResult, log_prices: np.ndarray, selected: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(Hurst exponents, mean crossings) of the ``selected`` directions' spreads, in blocks of SERIES_BLOCK_PAIRS."""
    hurst, crossings = np.full(len(selected), np.nan), np.full(len(selected), -1, dtype=np.int64)
    y, x = result.y_index, result.x_index
    for start in range(0, len(selected), SERIES_BLOCK_PAIRS):
        block = selected[start : start + SERIES_BLOCK_PAIRS]
        spreads = (log_prices[:, y[block]] - result.intercept[block]) - result.hedge_ratio[block] * log_prices[
            :, x[block]
        ]
        hurst[start : start + len(block)] = hurst_exponent(spreads)
        crossings[start : start + len(block)] = mean_crossings(spreads)
    return hurst, crossings


def series_and_confirmations(
    result: ScreenResult, log_prices: np.ndarray, series: np.ndarray, confirm: np.ndarray, *, holdout_bars: int,
    max_pvalue: float, processes: int = 1,
) -> dict[int, Confirmation]:
    """``add_series_statistics(result, log_prices, series)`` and ``confirm_candidates`` of the ``confirm``
    directions (returned), side by side in two forked processes when ``processes`` > 1 (``pairs.quant.forked``).
    Each is the very call one process makes (a split of either would change the grouping of its batched sums and
    the last bits of the results with the number of processes)."""
    from pairs.quant.confirmation import confirm_candidates  # confirmation imports this module's Confirmation

    jobs = (lambda: _series_statistics(result, log_prices, series),
            lambda: confirm_candidates(result, log_prices, confirm, holdout_bars=holdout_bars, max_pvalue=max_pvalue))
    done = forked_map(lambda first, stop: [job() for job in jobs[first:stop]], len(jobs), processes=processes)
    (hurst, crossings), confirmations = (output for outputs in done for output in outputs)
    result.hurst[series], result.mean_crossings[series] = hurst, crossings
    return confirmations


def preferred_directions(result: ScreenResult) -> np.ndarray:
    """Boolean mask: the one direction kept per unordered pair {a, b}: the lower Engle-Granger p-value, then the
    more negative ADF statistic, then the lower y index (NaN statistics rank last). A direction whose reverse was
    not tested is kept."""
    y, x = result.y_index, result.x_index
    low, high = np.minimum(y, x), np.maximum(y, x)
    pvalue = np.where(np.isnan(result.pvalue), np.inf, result.pvalue)
    adf = np.where(np.isnan(result.adf_stat), np.inf, result.adf_stat)
    order = np.lexsort((y, adf, pvalue, high, low))  # the last key sorts first
    first_of_pair = np.ones(len(order), dtype=bool)
    first_of_pair[1:] = (low[order][1:] != low[order][:-1]) | (high[order][1:] != high[order][:-1])
    preferred = np.zeros(len(order), dtype=bool)
    preferred[order[first_of_pair]] = True
    return preferred


def reverse_tested(result: ScreenResult) -> np.ndarray:
    """Boolean mask: the directions (y, x) whose reverse (x, y) is also in ``result`` with a p-value (not NaN: an
    undefined test, a constant series, offers no second p-value to choose from)."""
    y, x = result.y_index.astype(np.int64), result.x_index.astype(np.int64)
    if len(y) == 0:
        return np.zeros(0, dtype=bool)
    n = int(max(y.max(), x.max())) + 1
    return np.isin(x * n + y, (y * n + x)[~np.isnan(result.pvalue)])


def family_pvalues(result: ScreenResult, preferred: np.ndarray) -> np.ndarray:
    """The p-value each ``preferred`` direction enters the multiple-testing family with; NaN for the others.

    Preferring the lower of a pair's two Engle-Granger p-values selects on the data, and the minimum of two
    p-values is not a valid p-value (under the null it falls below alpha with probability up to 2 alpha). The
    Bonferroni correction over the two directions, ``min(1, 2 * min(p_yx, p_xy))``, is one whatever the
    dependence between them. A direction whose reverse was not tested keeps its own p-value."""
    factor = np.where(reverse_tested(result), 2.0, 1.0)
    family = np.full(len(result), np.nan)
    family[preferred] = np.minimum(1.0, factor[preferred] * result.pvalue[preferred])
    return family


def merge_and_adjust(parts: list[ScreenResult]) -> ScreenResult:
    """Join the blocks of one run, keep one direction per unordered pair (``preferred``), set its family p-value
    (``family_pvalues``: twice the lower p-value when both directions were tested) and the Benjamini-Hochberg
    q-values over the family p-values, each unordered pair counted once; the other direction's family p-value and
    q-value are NaN (it is not in the family: it cannot pass). A degenerate test (``degenerate_tests``: an exactly
    collinear pair, p 0 by statsmodels' convention) is left out of the family too (q-value NaN): it never passes,
    and its p of 0 would take the first rank and count in m, lowering every other pair's q-value."""
    merged = ScreenResult.concatenate(parts) if len(parts) != 1 else parts[0]
    merged.preferred = preferred_directions(merged)
    merged.family_pvalue = family_pvalues(merged, merged.preferred)
    family = np.where(degenerate_tests(merged), np.nan, merged.family_pvalue)
    merged.qvalue = np.full(len(merged), np.nan)
    merged.qvalue[merged.preferred] = benjamini_hochberg(family[merged.preferred])
    return merged


def passing_directions(
    result: ScreenResult, *, max_pvalue: float, max_qvalue: float, min_half_life: float, max_half_life: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(passed, half_life_ok)`` masks of a merged run (``merge_and_adjust``): passed = the family p-value (twice
    the lower of the pair's two Engle-Granger p-values, ``family_pvalues``; not the direction's raw ``pvalue``) <=
    ``max_pvalue``, its q-value <= ``max_qvalue`` and the preferred direction of its unordered pair (only it has
    them); half_life_ok = the half-life within [``min_half_life``, ``max_half_life``] bars. Candidates are the
    passed directions with a half-life in range that the out-of-sample confirmation then confirms
    (``confirmation.confirm_candidates``). The selection service and the walk-forward evaluation both decide with
    this one function; the grading's ``max_qvalue`` reads the q-value it set."""
    if result.qvalue is None or result.preferred is None or result.family_pvalue is None:
        raise ValueError("passing_directions needs a merged run (merge_and_adjust sets q-values and directions)")
    with np.errstate(invalid="ignore"):
        passed = (result.family_pvalue <= max_pvalue) & (result.qvalue <= max_qvalue) & result.preferred
        half_life_ok = (result.half_life >= min_half_life) & (result.half_life <= max_half_life)
    # A degenerate test never passes: a constant series (no regression) or an exactly collinear pair (statsmodels'
    # convention: ADF -inf, p 0, no lag), whose "spread" is rounding noise, not a mean-reverting price difference.
    return passed & ~degenerate_tests(result), half_life_ok


def degenerate_tests(result: ScreenResult) -> np.ndarray:
    """Directions whose Engle-Granger test is undefined (a constant series) or degenerate (exactly collinear)."""
    return (result.lag < 0) | ~np.isfinite(result.adf_stat) | ~np.isfinite(result.hedge_ratio)


def split_pairs(n_symbols: int, n_blocks: int) -> list[np.ndarray]:
    """Every ordered pair of ``n_symbols`` exactly once, in about ``n_blocks`` blocks (for fan-out and progress).

    The symbols are cut into g groups. A block holds the pairs between two groups, both directions (y in one
    and x in the other, then the other way round), or the pairs within one group. A block then touches only the
    symbols of its groups, and reads of the symbol matrices only the entries between its two groups
    (``pairs.quant.cross_products``): the Engle-Granger cross sums of all blocks together cost about what one
    product over the whole universe costs, where slicing the list of pairs would put every symbol in every block
    and pay the whole universe's product each time (and tiles of one direction, twice the whole).
    """
    groups, tiles = pair_tiles(n_symbols, n_blocks)
    return [tile_pairs(n_symbols, groups, first, second) for first, second in tiles]


def pair_tiles(n_symbols: int, n_blocks: int) -> tuple[int, list[tuple[int, int]]]:
    """(g, the (first, second) group indices of every block, first <= second) of ``split_pairs``: what a fanned-out
    block's message names instead of its thousands of pairs (``tile_pairs`` rebuilds them). A group of one symbol
    has no pair within: that block is left out."""
    groups = max(1, min(n_symbols, math.ceil((math.sqrt(8 * max(1, n_blocks) + 1) - 1) / 2)))
    starts = _group_starts(n_symbols, groups)
    return groups, [(first, second) for first in range(groups) for second in range(first, groups)
                    if first != second or starts[first + 1] - starts[first] > 1]


def _group_starts(n_symbols: int, groups: int) -> np.ndarray:
    """Where each of ``groups`` consecutive groups of symbols starts, and the end (``np.array_split``'s sizes)."""
    sizes = np.full(groups, n_symbols // groups)
    sizes[: n_symbols % groups] += 1
    return np.concatenate(([0], np.cumsum(sizes)))


def tile_pairs(n_symbols: int, groups: int, first: int, second: int) -> np.ndarray:
    """The (y, x) pairs of one block of ``split_pairs``: between groups ``first`` and ``second`` of ``groups``, both
    directions, or within the group when they are the same; (0, 2) when the block is empty."""
    if not (0 <= first <= second < groups <= max(1, n_symbols)):
        raise ValueError(f"no block ({first}, {second}) of {groups} groups of {n_symbols} symbols")
    starts = _group_starts(n_symbols, groups)
    y, x = np.meshgrid(np.arange(starts[first], starts[first + 1]), np.arange(starts[second], starts[second + 1]),
                       indexing="ij")
    if first == second:
        distinct = y != x
        return np.column_stack([y[distinct], x[distinct]]).astype(np.int64)
    there = np.column_stack([y.ravel(), x.ravel()]).astype(np.int64)
    return np.concatenate((there, there[:, ::-1]))


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool
    formation_hedge_ratio: float
    formation_intercept: float
    holdout_adf_stat: float
    holdout_pvalue: float
    johansen_trace: float
    johansen_critical_95: float
    johansen_passed: bool


def confirm_out_of_sample(
    log_y: np.ndarray, log_x: np.ndarray, *, holdout_bars: int, max_pvalue: float
) -> Confirmation:
    """Fit the hedge ratio without the last ``holdout_bars`` bars, then test the held-out spread for
    stationarity (ADF with constant, AIC lag choice; MacKinnon p-value); and Johansen's trace test (r = 0) on the
    whole window at 95%. Confirmed when both hold."""
    from statsmodels.tsa.stattools import adfuller  # only here: the batched screen itself needs no statsmodels

    formation_y, formation_x = log_y[:-holdout_bars], log_x[:-holdout_bars]
    beta = float(np.cov(formation_y, formation_x, ddof=0)[0, 1] / np.var(formation_x))
    alpha = float(formation_y.mean() - beta * formation_x.mean())
    holdout_spread = log_y[-holdout_bars:] - alpha - beta * log_x[-holdout_bars:]
    adf_stat, holdout_p, *_ = adfuller(holdout_spread, regression="c", autolag="AIC", result_object=False)
    system = np.column_stack([log_y, log_x])
    johansen = johansen_test(system, det_order=0)  # lag order chosen by AIC
    trace, critical = float(johansen.trace_stat[0]), float(johansen.trace_critical_values[0, 1])
    johansen_passed = trace > critical
    return Confirmation(
        confirmed=bool(holdout_p <= max_pvalue and johansen_passed),
        formation_hedge_ratio=beta, formation_intercept=alpha, holdout_adf_stat=float(adf_stat),
        holdout_pvalue=float(holdout_p), johansen_trace=trace, johansen_critical_95=critical,
        johansen_passed=johansen_passed,
    )
