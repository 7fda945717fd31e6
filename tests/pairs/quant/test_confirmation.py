"""Batched out-of-sample confirmation against statsmodels' adfuller / coint_johansen / VAR lag selection.

Tolerances: ADF and Johansen statistics agree to 1e-9 relative where they exceed 1 in size and 1e-9 absolute
below (``close``); p-values to 1e-9 absolute (they are probabilities); lags exactly; hedge ratio and intercept to
1e-12 relative of the reference's ``np.cov`` arithmetic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import adfuller
from statsmodels.tsa.vector_ar.var_model import VAR
from statsmodels.tsa.vector_ar.vecm import coint_johansen

from pairs.quant import confirmation
from pairs.quant.cointegration import engle_granger_batch
from pairs.quant.confirmation import (
    JOHANSEN_CRITICAL_95,
    adf_constant_single,
    confirm_batch,
    holdout_maxlag,
)
from pairs.quant.johansen import select_k_ar_diff
from pairs.quant.lag_gram import final_order_gram, lag_grams
from pairs.quant.screening import Confirmation, confirm_out_of_sample

N_REAL_SYMBOLS = 40
N_REAL_BARS = 2000
HOLDOUT = 500
TOLERANCE = 1e-9


def close(actual, expected, tolerance: float = TOLERANCE) -> bool:
    """Relative agreement for values above 1 in size, absolute below; NaN only matches NaN."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    scale = np.maximum(1.0, np.abs(expected))
    both_nan = np.isnan(actual) & np.isnan(expected)
    return bool(np.all(both_nan | (np.abs(actual - expected) <= tolerance * scale)))


def load_log_prices(data_dir: Path, n_symbols: int, n_bars: int) -> np.ndarray:
    """Last ``n_bars`` hourly log closes of the first ``n_symbols`` full-history symbols (forward-filled grid)."""
    closes = {}
    for path in sorted(data_dir.glob("*.csv.gz")):
        frame = pd.read_csv(path, usecols=["timestamp", "close"])
        closes[path.name.split(".")[0]] = pd.Series(
            frame["close"].to_numpy(), index=pd.to_datetime(frame["timestamp"], unit="ms")
        )
    first_bar = min(series.index[0] for series in closes.values())
    last_bar = max(series.index[-1] for series in closes.values())
    grid = pd.date_range(first_bar, last_bar, freq="h")
    full_history = [name for name, series in closes.items() if series.index[0] == first_bar]
    panel = pd.DataFrame({name: closes[name].reindex(grid).ffill() for name in full_history[:n_symbols]})
    return np.log(panel.to_numpy()[-n_bars:])


def reference_adf(log_y: np.ndarray, log_x: np.ndarray, holdout: int) -> tuple[float, float, float, int, float]:
    """(beta, alpha, statistic, lag, p-value) as confirm_out_of_sample computes them; NaN / -1 where it raises."""
    formation_y, formation_x = log_y[:-holdout], log_x[:-holdout]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        beta = float(np.cov(formation_y, formation_x, ddof=0)[0, 1] / np.var(formation_x))
    alpha = float(formation_y.mean() - beta * formation_x.mean())
    spread = log_y[-holdout:] - alpha - beta * log_x[-holdout:]
    if not np.isfinite(spread).all() or spread.max() == spread.min():
        return beta, alpha, np.nan, -1, np.nan
    result = adfuller(spread, regression="c", autolag="AIC", result_object=True)
    return beta, alpha, result.statistic, result.lags, result.pvalue


def reference_johansen(system: np.ndarray, max_k_ar_diff: int = 12) -> tuple[float, float, int]:
    """(trace r=0, 95 % critical value, k) with k the minimum-AIC VAR order (p = k + 1 >= 1) of statsmodels."""
    aic = VAR(system).select_order(max_k_ar_diff + 1, trend="c").ics["aic"][1:]
    k_ar_diff = int(np.argmin(aic))
    result = coint_johansen(system, 0, k_ar_diff)
    return result.lr1[0], result.cvt[0, 1], k_ar_diff


def assert_direction_matches(batch, index: int, log_prices: np.ndarray, holdout: int) -> None:
    y, x = batch.y_index[index], batch.x_index[index]
    beta, _, stat, lag, pvalue = reference_adf(log_prices[:, y], log_prices[:, x], holdout)
    assert batch.holdout_lag[index] == lag
    assert close(batch.holdout_adf_stat[index], stat)
    assert close(batch.holdout_pvalue[index], pvalue)
    assert batch.formation_hedge_ratio[index] == pytest.approx(beta, rel=1e-12, nan_ok=True)


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def real_log_prices(shared_candles_dir) -> np.ndarray:
    return load_log_prices(shared_candles_dir, N_REAL_SYMBOLS, N_REAL_BARS)


@pytest.fixture(scope="module")
def real_directions(real_log_prices) -> np.ndarray:
    """The 120 best Engle-Granger directions, their reverses, and random others: 300 directions in all."""
    screen = engle_granger_batch(real_log_prices)
    best = np.argsort(screen.pvalue)[:120]
    chosen = {(int(screen.y_index[i]), int(screen.x_index[i])) for i in best}
    chosen |= {(x, y) for y, x in chosen}
    rng = np.random.default_rng(0)
    while len(chosen) < 300:
        y, x = rng.choice(N_REAL_SYMBOLS, size=2, replace=False)
        chosen.add((int(y), int(x)))
    return np.array(sorted(chosen))


@pytest.fixture(scope="module")
def real_batch(real_log_prices, real_directions):
    return confirm_batch(real_log_prices, real_directions[:, 0], real_directions[:, 1], holdout_bars=HOLDOUT,
                         max_pvalue=0.1, block_size=128)


def test_real_directions_match_statsmodels_adfuller(real_log_prices, real_batch):
    stats, pvalues = [], []
    for index in range(len(real_batch)):
        y, x = real_batch.y_index[index], real_batch.x_index[index]
        beta, alpha, stat, lag, pvalue = reference_adf(real_log_prices[:, y], real_log_prices[:, x], HOLDOUT)
        assert real_batch.holdout_lag[index] == lag, index
        stats.append(stat)
        pvalues.append(pvalue)
        assert real_batch.formation_hedge_ratio[index] == pytest.approx(beta, rel=1e-12)
        assert real_batch.formation_intercept[index] == pytest.approx(alpha, rel=1e-12, abs=1e-12)
    assert close(real_batch.holdout_adf_stat, stats)
    np.testing.assert_allclose(real_batch.holdout_pvalue, pvalues, rtol=0, atol=TOLERANCE)
    assert real_batch.holdout_maxlag == 18
    # The sample covers the interesting range: many lags, significant and insignificant spreads.
    assert len(np.unique(real_batch.holdout_lag)) > 8
    assert (real_batch.holdout_pvalue < 0.01).any() and (real_batch.holdout_pvalue > 0.5).any()


def directions_by_pair(batch) -> dict[tuple[int, int], list[int]]:
    """Indices of the directions of each unordered pair."""
    pairs: dict[tuple[int, int], list[int]] = {}
    for index, (y, x) in enumerate(zip(batch.y_index.tolist(), batch.x_index.tolist(), strict=True)):
        pairs.setdefault((min(y, x), max(y, x)), []).append(index)
    return pairs


def test_real_pairs_match_statsmodels_johansen(real_log_prices, real_batch):
    for (y, x), indices in directions_by_pair(real_batch).items():
        system = real_log_prices[:, [y, x]]
        trace, critical, k_ar_diff = reference_johansen(system)
        assert select_k_ar_diff(system) == k_ar_diff
        np.testing.assert_array_equal(real_batch.johansen_k_ar_diff[indices], k_ar_diff)
        assert close(real_batch.johansen_trace[indices], np.full(len(indices), trace))
        np.testing.assert_array_equal(real_batch.johansen_critical_95[indices], critical)
        np.testing.assert_array_equal(real_batch.johansen_passed[indices], trace > critical)
    assert len(np.unique(real_batch.johansen_k_ar_diff)) > 5
    assert real_batch.johansen_passed.any() and not real_batch.johansen_passed.all()


def test_real_directions_match_confirm_out_of_sample(real_log_prices, real_batch):
    assert real_batch.confirmed.any() and not real_batch.confirmed.all()
    for index in range(0, len(real_batch), 10):
        y, x = real_batch.y_index[index], real_batch.x_index[index]
        expected = confirm_out_of_sample(real_log_prices[:, y], real_log_prices[:, x], holdout_bars=HOLDOUT,
                                         max_pvalue=0.1)
        actual = Confirmation(**real_batch.confirmation_fields(index))
        assert (actual.confirmed, actual.johansen_passed) == (expected.confirmed, expected.johansen_passed)
        for name in ("formation_hedge_ratio", "formation_intercept", "holdout_adf_stat", "holdout_pvalue",
                     "johansen_trace", "johansen_critical_95"):
            assert close(getattr(actual, name), getattr(expected, name)), name


def test_real_data_needs_no_exact_path(real_log_prices, real_directions, monkeypatch):
    calls = []
    monkeypatch.setattr(confirmation, "adf_constant_single", lambda *a: calls.append(a) or (np.nan, -1))
    monkeypatch.setattr(confirmation, "_johansen_single", lambda *a: calls.append(a) or (np.nan, -1))
    confirm_batch(real_log_prices, real_directions[:, 0], real_directions[:, 1], holdout_bars=HOLDOUT,
                  max_pvalue=0.1)
    assert calls == []


# ------------------------------------------------------------------------------------------------ synthetic


def random_walks(seed: int, n_obs: int, n_series: int, scale: float = 0.01) -> np.ndarray:
    return 3.0 + scale * np.cumsum(np.random.default_rng(seed).normal(size=(n_obs, n_series)), axis=0)


def ar1(seed: int, n_obs: int, phi: float, scale: float) -> np.ndarray:
    shocks = np.random.default_rng(seed).normal(scale=scale, size=n_obs)
    noise = np.empty(n_obs)
    noise[0] = shocks[0]
    for t in range(1, n_obs):
        noise[t] = phi * noise[t - 1] + shocks[t]
    return noise


def assert_all_match_statsmodels(log_prices: np.ndarray, directions, holdout: int, max_k_ar_diff: int = 12):
    directions = np.asarray(directions)
    batch = confirm_batch(log_prices, directions[:, 0], directions[:, 1], holdout_bars=holdout, max_pvalue=0.05,
                          max_k_ar_diff=max_k_ar_diff)
    for index, (y, x) in enumerate(directions):
        assert_direction_matches(batch, index, log_prices, holdout)
        trace, _, k_ar_diff = reference_johansen(log_prices[:, [y, x]], max_k_ar_diff)
        assert batch.johansen_k_ar_diff[index] == k_ar_diff
        assert close(batch.johansen_trace[index], trace)
    return batch


def test_cointegrated_pair_is_confirmed_and_walks_are_not():
    walks = random_walks(1, 1500, 3)
    walks[:, 0] = 0.5 + 1.4 * walks[:, 1] + ar1(2, 1500, phi=0.8, scale=0.004)
    batch = assert_all_match_statsmodels(walks, [(0, 1), (1, 0), (1, 2), (2, 1)], 300)
    np.testing.assert_array_equal(batch.confirmed, [True, True, False, False])
    assert batch.formation_hedge_ratio[0] == pytest.approx(1.4, abs=0.05)


@pytest.mark.parametrize(("n_bars", "holdout"), [(45, 4), (45, 20), (60, 7), (120, 30), (400, 101)])
def test_short_windows_match_statsmodels(n_bars, holdout):
    walks = random_walks(3, n_bars, 3, scale=1.0)
    walks[:, 2] = walks[:, 0] + ar1(4, n_bars, phi=0.3, scale=0.5)
    batch = assert_all_match_statsmodels(walks, [(0, 1), (1, 2), (2, 0), (0, 2)], holdout)
    assert batch.holdout_maxlag == holdout_maxlag(holdout)


@pytest.mark.parametrize("max_k_ar_diff", [0, 1, 4])
def test_other_johansen_lag_bounds_match(max_k_ar_diff):
    walks = random_walks(5, 300, 3)
    walks[:, 1] = 0.2 + walks[:, 0] + ar1(6, 300, phi=0.9, scale=0.01)
    batch = assert_all_match_statsmodels(walks, [(0, 1), (2, 1)], 60, max_k_ar_diff)
    for index, (y, x) in enumerate([(0, 1), (2, 1)]):
        assert batch.johansen_k_ar_diff[index] == select_k_ar_diff(walks[:, [y, x]], max_k_ar_diff)


def test_nearly_collinear_legs_take_the_exact_paths(monkeypatch):
    """y = x + 1e-7 noise: the held-out spread is 7 digits below its legs, the Johansen levels nearly collinear."""
    walks = random_walks(7, 600, 1)
    log_prices = np.column_stack((walks[:, 0] + 1e-7 * np.random.default_rng(8).normal(size=600), walks[:, 0]))
    calls = {"adf": 0, "johansen": 0}
    exact_adf, exact_johansen = confirmation.adf_constant_single, confirmation._johansen_single

    def counting(name, function):
        def wrapper(*args):
            calls[name] += 1
            return function(*args)
        return wrapper

    monkeypatch.setattr(confirmation, "adf_constant_single", counting("adf", exact_adf))
    monkeypatch.setattr(confirmation, "_johansen_single", counting("johansen", exact_johansen))
    batch = confirm_batch(log_prices, [0, 1], [1, 0], holdout_bars=150, max_pvalue=0.05)
    assert calls == {"adf": 2, "johansen": 1}
    for index in range(2):
        assert_direction_matches(batch, index, log_prices, 150)
    # statsmodels' own inverses lose about 3 digits on this system (its two orders differ by 1e-3); the trace is
    # invariant to linear maps of the system, and on (x, y - x), exact in floating point, it is well conditioned.
    well_conditioned = np.column_stack((log_prices[:, 1], log_prices[:, 0] - log_prices[:, 1]))
    trace, _, k_ar_diff = reference_johansen(well_conditioned)
    assert batch.johansen_k_ar_diff[0] == batch.johansen_k_ar_diff[1] == k_ar_diff
    assert close(batch.johansen_trace, [trace, trace])


def test_constant_ish_spread_matches_statsmodels():
    """A spread 1e-9 of its legs: recomputed with the reference's own arithmetic, so adfuller sees the same input."""
    walks = random_walks(9, 600, 1)[:, 0]
    log_prices = np.column_stack((0.3 + 1.2 * walks + 1e-9 * ar1(10, 600, phi=0.5, scale=1.0), walks))
    batch = confirm_batch(log_prices, [0, 1], [1, 0], holdout_bars=150, max_pvalue=0.05)
    for index in range(2):
        assert_direction_matches(batch, index, log_prices, 150)


def test_flat_holdout_is_undefined_like_adfuller():
    """Both legs forward-filled over the held-out bars (e.g. a delisting): adfuller raises; NaN, not confirmed."""
    walks = random_walks(11, 600, 2)
    walks[:, 0] = 2.0 + 0.8 * walks[:, 1] + ar1(12, 600, phi=0.7, scale=0.01)
    walks[-100:] = walks[-101]
    held_out = walks[-50:, 0] - 0.1 * walks[-50:, 1]
    with pytest.raises(ValueError, match="constant"):
        adfuller(held_out, regression="c", autolag="AIC", result_object=True)
    batch = assert_all_match_statsmodels(walks, [(0, 1), (1, 0)], 50)
    assert np.isnan(batch.holdout_adf_stat).all() and np.isnan(batch.holdout_pvalue).all()
    np.testing.assert_array_equal(batch.holdout_lag, [-1, -1])
    assert not batch.confirmed.any()
    assert np.isfinite(batch.johansen_trace).all()


def test_constant_formation_leg_is_undefined():
    walks = random_walks(13, 400, 2)
    walks[:-100, 1] = walks[0, 1]
    batch = confirm_batch(walks, [0, 1], [1, 0], holdout_bars=100, max_pvalue=0.05)
    # x constant over the formation bars: no hedge ratio (confirm_out_of_sample gets NaN and adfuller fails).
    assert np.isnan(batch.formation_hedge_ratio[0]) and np.isnan(batch.holdout_adf_stat[0])
    assert batch.holdout_lag[0] == -1 and not batch.confirmed[0]
    # The other direction regresses on a varying leg and is an ordinary test.
    assert_direction_matches(batch, 1, walks, 100)


def test_constant_leg_over_the_window_has_no_johansen_test():
    walks = random_walks(14, 300, 2)
    walks[:, 1] = 1.5
    batch = confirm_batch(walks, [0], [1], holdout_bars=60, max_pvalue=0.05)
    assert np.isnan(batch.johansen_trace[0]) and batch.johansen_k_ar_diff[0] == -1
    assert not batch.johansen_passed[0] and not batch.confirmed[0]


def test_both_directions_share_one_johansen_system(monkeypatch):
    walks = random_walks(15, 500, 4)
    systems = []
    real_systems = confirmation._johansen_systems

    def recording(log_prices, first, second, max_k_ar_diff):
        systems.extend(zip(first.tolist(), second.tolist(), strict=True))
        return real_systems(log_prices, first, second, max_k_ar_diff)

    monkeypatch.setattr(confirmation, "_johansen_systems", recording)
    batch = confirm_batch(walks, [0, 1, 3, 0, 2], [1, 0, 2, 1, 3], holdout_bars=100, max_pvalue=0.05)
    assert sorted(systems) == [(0, 1), (2, 3)]
    assert batch.johansen_trace[0] == batch.johansen_trace[1] == batch.johansen_trace[3]
    assert batch.johansen_trace[2] == batch.johansen_trace[4]
    assert batch.holdout_adf_stat[0] != batch.holdout_adf_stat[1]


def test_block_size_does_not_change_results():
    walks = random_walks(16, 500, 6)
    walks[:, 3] = 0.4 * walks[:, 0] + ar1(17, 500, phi=0.8, scale=0.01)
    directions = np.array([(y, x) for y in range(6) for x in range(6) if y != x])
    reference = confirm_batch(walks, directions[:, 0], directions[:, 1], holdout_bars=120, max_pvalue=0.05)
    for block_size in (1, 7, 1000):
        other = confirm_batch(walks, directions[:, 0], directions[:, 1], holdout_bars=120, max_pvalue=0.05,
                              block_size=block_size)
        np.testing.assert_array_equal(other.holdout_lag, reference.holdout_lag)
        np.testing.assert_array_equal(other.johansen_k_ar_diff, reference.johansen_k_ar_diff)
        np.testing.assert_allclose(other.holdout_adf_stat, reference.holdout_adf_stat, rtol=1e-12)
        np.testing.assert_allclose(other.johansen_trace, reference.johansen_trace, rtol=1e-12)


def test_empty_batch():
    batch = confirm_batch(random_walks(18, 200, 3), [], [], holdout_bars=50, max_pvalue=0.05)
    assert len(batch) == 0 and batch.confirmed.dtype == bool


def test_invalid_input_is_rejected():
    walks = random_walks(19, 100, 3)
    with pytest.raises(ValueError, match="2-D"):
        confirm_batch(walks[:, 0], [0], [1], holdout_bars=20, max_pvalue=0.05)
    with pytest.raises(ValueError, match="same length"):
        confirm_batch(walks, [0, 1], [1], holdout_bars=20, max_pvalue=0.05)
    with pytest.raises(ValueError, match="indices"):
        confirm_batch(walks, [0], [3], holdout_bars=20, max_pvalue=0.05)
    with pytest.raises(ValueError, match="different"):
        confirm_batch(walks, [1], [1], holdout_bars=20, max_pvalue=0.05)
    for holdout in (3, 99):
        with pytest.raises(ValueError, match="holdout_bars"):
            confirm_batch(walks, [0], [1], holdout_bars=holdout, max_pvalue=0.05)
    with pytest.raises(ValueError, match="too few"):
        confirm_batch(walks[:40], [0], [1], holdout_bars=10, max_pvalue=0.05)
    with pytest.raises(ValueError, match="finite"):
        confirm_batch(np.where(np.arange(100)[:, None] == 5, np.nan, walks), [0], [1], holdout_bars=20,
                      max_pvalue=0.05)
    with pytest.raises(ValueError, match="block_size"):
        confirm_batch(walks, [0], [1], holdout_bars=20, max_pvalue=0.05, block_size=0)


# ------------------------------------------------------------------------------------------------ building blocks


@pytest.mark.parametrize("holdout", [4, 5, 25, 100, 500, 2000])
def test_holdout_maxlag_is_adfullers(holdout):
    series = random_walks(20, holdout, 1, scale=1.0)[:, 0]
    result = adfuller(series, regression="c", autolag="AIC", store=True, result_object=True)
    assert holdout_maxlag(holdout) == result.resstore.maxlag


@pytest.mark.parametrize("seed", range(5))
def test_single_adf_matches_adfuller(seed):
    series = ar1(seed, 300, phi=0.9, scale=1.0) + np.cumsum(np.random.default_rng(seed + 50).normal(size=300)) * 0.1
    stat, lag = adf_constant_single(series, holdout_maxlag(300))
    result = adfuller(series, regression="c", autolag="AIC", result_object=True)
    assert lag == result.lags
    assert close(stat, result.statistic)
    assert adf_constant_single(np.full(50, 2.0), 5) == (pytest.approx(np.nan, nan_ok=True), -1)


def explicit_design(levels: np.ndarray, max_lag: int, first_row: int) -> np.ndarray:
    """[1, l_t, d_{t-1..t-p}, d_t] for rows t = first_row..R-2 of one (c, R) system, built directly."""
    diffs = np.diff(levels, axis=1)
    padded = np.concatenate((np.zeros((levels.shape[0], max_lag)), diffs), axis=1)
    rows = []
    for t in range(first_row, levels.shape[1] - 1):
        lagged = [padded[:, t - lag + max_lag] for lag in [*range(1, max_lag + 1), 0]]
        rows.append(np.concatenate(([1.0], levels[:, t] - levels.mean(axis=1), *lagged)))
    return np.array(rows)


@pytest.mark.parametrize(("n_channels", "max_lag"), [(1, 0), (1, 3), (2, 0), (2, 4)])
def test_lag_grams_equal_explicit_designs(n_channels, max_lag):
    levels = random_walks(21, 40, 3 * n_channels, scale=1.0).T.reshape(3, n_channels, 40)
    grams = lag_grams(levels, max_lag)
    for first_row in range(max_lag + 1):
        gram = grams.gram(first_row)
        for system in range(3):
            design = explicit_design(levels[system], max_lag, first_row)
            np.testing.assert_allclose(gram[system], design.T @ design, rtol=1e-10, atol=1e-9)
    lags = np.arange(3) % (max_lag + 1)
    final = final_order_gram(grams, lags)
    c = n_channels
    order = np.r_[0, 1 + c : 1 + c * (max_lag + 1), 1 : 1 + c, 1 + c * (max_lag + 1) : grams.size]
    for system, lag in enumerate(lags):
        design = explicit_design(levels[system], max_lag, lag)[:, order]
        used = np.r_[0 : 1 + c * lag, grams.size - 2 * c : grams.size]
        np.testing.assert_allclose(final[system][np.ix_(used, used)], design[:, used].T @ design[:, used],
                                   rtol=1e-10, atol=1e-9)
        unused = np.setdiff1d(np.arange(grams.size), used)
        np.testing.assert_array_equal(final[system][unused][:, unused], np.eye(len(unused)))
        np.testing.assert_array_equal(final[system][unused][:, used], 0.0)


def test_critical_value_is_statsmodels():
    system = random_walks(22, 200, 2)
    assert coint_johansen(system, 0, 1).cvt[0, 1] == JOHANSEN_CRITICAL_95
