"""Benchmark the batched Engle-Granger screen against a statsmodels ``coint`` loop.

Run from the repository root:  python benchmarks/bench_cointegration.py

Data: hourly Binance closes in ../shared/data/binance-usdt-1h-2021 (read in
place), put on the full hourly grid and forward-filled (the files share a few
missing hours); the last 2,000 bars are used, as log prices.

Universes:
* 126 symbols: every file. The 7 symbols listed less than 2,000 hours before
  the end are back-filled with their first price (flat before listing); this
  only affects what they test, not the timing.
* 200 and 500 symbols: the 126 plus derived series. Derived series j is the
  full-history symbol ``j mod n_full`` taken over an earlier 2,000-bar window,
  ``500 * (1 + j // n_full)`` bars before the end (offsets 500..2,000 bars), so
  each is a real price path of a different period.

Measured, single-threaded (BLAS thread variables are set to 1 before numpy loads):
(a) statsmodels ``coint(y, x, trend="c", autolag="aic")`` on a random sample of
    pairs of the 200-symbol universe; the time for all its ordered pairs is
    extrapolated from the per-pair mean.
(b) ``engle_granger_batch`` on all ordered pairs of the same universe; speed
    ratio, and the largest p-value and relative statistic differences to
    statsmodels over the sampled pairs.
(c) ``engle_granger_batch`` on all ordered pairs of the 126- and 500-symbol
    universes: wall time, peak traced memory of the call (tracemalloc, a
    separate run so tracing does not slow the timed one) and the process peak
    RSS (ru_maxrss).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _shared import DEFAULT_DATA_DIR, load_closes  # noqa: E402
from statsmodels.tsa.stattools import coint  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pairs.quant.cointegration import all_ordered_pairs, engle_granger_batch  # noqa: E402

N_BARS = 2000
DERIVED_OFFSET_STEP = 500




def build_universe(closes: pd.DataFrame, n_symbols: int) -> np.ndarray:
    """(N_BARS, n_symbols) log prices: the real symbols, then derived earlier-window series."""
    log_closes = np.log(closes.to_numpy())
    real = pd.DataFrame(log_closes[-N_BARS:]).bfill().to_numpy()
    full_history = np.flatnonzero(~np.isnan(log_closes).any(axis=0))
    derived = []
    for j in range(max(0, n_symbols - real.shape[1])):
        source = full_history[j % len(full_history)]
        offset = DERIVED_OFFSET_STEP * (1 + j // len(full_history))
        end = log_closes.shape[0] - offset
        if end - N_BARS < 0:
            raise SystemExit(f"not enough history for {n_symbols} symbols")
        derived.append(log_closes[end - N_BARS : end, source])
    return np.column_stack([real, *derived])[:, :n_symbols]


def time_batch(log_prices: np.ndarray, block_size: int) -> tuple[float, object]:
    start = time.perf_counter()
    result = engle_granger_batch(log_prices, block_size=block_size)
    return time.perf_counter() - start, result


def traced_peak_mib(log_prices: np.ndarray, block_size: int) -> float:
    tracemalloc.start()
    try:
        engle_granger_batch(log_prices, block_size=block_size)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--sample-pairs", type=int, default=300, help="pairs timed with statsmodels")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    closes = load_closes(args.data_dir.resolve())
    universe_200 = build_universe(closes, 200)
    print(f"# Engle-Granger screen benchmark ({N_BARS} hourly bars, single thread)\n")
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}; {closes.shape[1]} real symbols in {args.data_dir.resolve()}\n"
    )

    # (a) statsmodels loop on a random sample of the 200-symbol universe's pairs.
    pairs_200 = all_ordered_pairs(200)
    rng = np.random.default_rng(args.seed)
    sample = pairs_200[rng.choice(len(pairs_200), size=args.sample_pairs, replace=False)]
    loop_stats, loop_pvalues = [], []
    start = time.perf_counter()
    for y, x in sample:
        result = coint(universe_200[:, y], universe_200[:, x], trend="c", autolag="aic")
        loop_stats.append(result[0])
        loop_pvalues.append(result[1])
    loop_seconds_per_pair = (time.perf_counter() - start) / len(sample)
    loop_seconds_all = loop_seconds_per_pair * len(pairs_200)

    # (b) batched screen on all pairs of the same universe.
    batch_seconds, batch_200 = time_batch(universe_200, args.block_size)
    sample_rows = sample[:, 0] * 199 + sample[:, 1] - (sample[:, 1] > sample[:, 0])
    np.testing.assert_array_equal(batch_200.y_index[sample_rows], sample[:, 0])
    max_pvalue_diff = np.max(np.abs(batch_200.pvalue[sample_rows] - np.array(loop_pvalues)))
    max_stat_rel_diff = np.max(np.abs(batch_200.adf_stat[sample_rows] / np.array(loop_stats) - 1))

    print("## statsmodels loop vs batched screen, 200 symbols\n")
    print("| method | pairs | wall time (s) | per pair (ms) |")
    print("|---|---:|---:|---:|")
    print(
        f"| statsmodels coint loop (timed on {len(sample)} random pairs, extrapolated) | {len(pairs_200):,} "
        f"| {loop_seconds_all:,.1f} | {1e3 * loop_seconds_per_pair:.2f} |"
    )
    print(
        f"| engle_granger_batch | {len(pairs_200):,} | {batch_seconds:.2f} "
        f"| {1e3 * batch_seconds / len(pairs_200):.4f} |"
    )
    print(
        f"\nSpeed-up: **{loop_seconds_all / batch_seconds:,.0f}x**. Over the {len(sample)} sampled pairs "
        f"(seed {args.seed}): max |p-value difference| = {max_pvalue_diff:.2e}, "
        f"max relative statistic difference = {max_stat_rel_diff:.2e}.\n"
    )

    # (c) full screens of the 126 real symbols and a 500-symbol universe.
    print("## Full screens (all ordered pairs)\n")
    print("| universe | symbols | pairs | wall time (s) | peak traced memory of the call (MiB) |")
    print("|---|---:|---:|---:|---:|")
    universes = {
        "real symbols": build_universe(closes, closes.shape[1]),
        "200 (real + derived)": universe_200,
        "500 (real + derived)": build_universe(closes, 500),
    }
    for label, log_prices in universes.items():
        seconds, result = time_batch(log_prices, args.block_size)
        peak = traced_peak_mib(log_prices, args.block_size)
        print(f"| {label} | {log_prices.shape[1]} | {len(result):,} | {seconds:.2f} | {peak:,.0f} |")
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nProcess peak RSS (ru_maxrss, whole run incl. data loading and statsmodels): {max_rss_mib:,.0f} MiB.")


if __name__ == "__main__":
    main()
