"""Synthetic markets for the walk-forward tests: a cointegrated pair whose trades are known in advance.

log y = log x + s, with s = A sin(2 pi (t + 0.5) / 48) + small noise: |z| stays below 1.7, so the rule never enters
on its own. Every ``SPIKE_EVERY`` bars the spread jumps by +-2.5 A for one bar, at a bar where the sine is just past
zero, so z is about 3 there (between entry 2 and stop 4) and of the opposite sign on the next bar: a short (long)
spread entered on the spike bar and exited on the next one, a win of about 2.5 A in log spread.
"""

from __future__ import annotations

import numpy as np

from pairs.quant.grading import LevelRule
from pairs.quant.walkforward import Market, WalkForwardParams

HOUR_MS = 3_600_000
START_MS = 1_609_459_200_000  # 2021-01-01T00:00Z
AMPLITUDE = 0.02
PERIOD = 48
SPIKE_EVERY = 96
TURNOVER = 1e7  # per bar: 2.4e8 a day

PARAMS = WalkForwardParams(lookback_bars=1000, min_history_bars=1000, confirmation_bars=250, validation_bars=500,
                           min_half_life_bars=1.0, zscore_window_bars=500, min_turnover_24h=1e6)
LADDER = [
    LevelRule(0, False, 0, 0.0, 0.0, 1.0, 1.0, 0.0, 1e9),
    LevelRule(1, False, 3, 0.5, 1.2, 0.15, 0.10, 1.0, 200.0),
    LevelRule(2, True, 10, 0.55, 1.3, 0.10, 0.10, 5.0, 150.0),
]


def spike_bars(n_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """(bars, signs): +1 spikes (short entries) at 96k + 24, -1 spikes (long entries) at 96k + 48."""
    short = np.arange(24, n_bars, SPIKE_EVERY)
    long = np.arange(48, n_bars, SPIKE_EVERY)
    bars = np.concatenate([short, long])
    signs = np.concatenate([np.ones(len(short)), -np.ones(len(long))])
    order = np.argsort(bars)
    return bars[order], signs[order]


def spread(n_bars: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_bars)
    s = AMPLITUDE * np.sin(2 * np.pi * (t + 0.5) / PERIOD) + AMPLITUDE / 20 * rng.standard_normal(n_bars)
    bars, signs = spike_bars(n_bars)
    s[bars] += 2.5 * AMPLITUDE * signs
    return s


def market(n_bars: int, *, late_listing_bar: int | None = None, illiquid: bool = False, seed: int = 7) -> Market:
    """Symbols AAA (x), BBB (y = x + spread), CCC and DDD independent random walks. ``late_listing_bar``: CCC has no
    bar before it; ``illiquid``: DDD's turnover is a thousandth of the others'."""
    rng = np.random.default_rng(seed)
    log_x = np.cumsum(0.004 * rng.standard_normal(n_bars)) + np.log(100.0)
    log_y = log_x + spread(n_bars) + np.log(0.5)
    log_c = np.cumsum(0.004 * rng.standard_normal(n_bars)) + np.log(20.0)
    log_d = np.cumsum(0.004 * rng.standard_normal(n_bars)) + np.log(3.0)
    closes = np.exp(np.column_stack([log_x, log_y, log_c, log_d]))
    if late_listing_bar is not None:
        closes[:late_listing_bar, 2] = np.nan
    turnover = np.full(closes.shape, TURNOVER)
    turnover[np.isnan(closes)] = np.nan
    if illiquid:
        turnover[:, 3] = TURNOVER / 1000
    times = START_MS + HOUR_MS * np.arange(n_bars, dtype=np.int64)
    return Market(times, closes, turnover, ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"], HOUR_MS)
