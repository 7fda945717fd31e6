"""Benchmark the batched out-of-sample confirmation against a loop of ``confirm_out_of_sample``.

Run from the repository root:  python benchmarks/bench_confirmation.py

Data: hourly Binance closes in ../shared/data/binance-usdt-1h-2021 (read in place), on the full hourly grid and
forward-filled; the last 2,000 bars of the first 100 symbols with a complete window, as log prices.

Measured in one run, single-threaded (BLAS thread variables are set to 1 before numpy loads), on the same
seeded random sample of 300 ordered directions:
(a) the loop the screen runs today: ``confirm_out_of_sample`` per direction (statsmodels ``adfuller`` and
    ``johansen_test`` with its AIC lag selection), after one warm-up call;
(b) ``confirm_batch`` on all of them, after a warm-up call on a few directions (best of ``--repeats`` runs, and
    the first run);
then the speed ratio and the largest absolute differences between the two, field by field, and how many
booleans (confirmed, Johansen passed) differ.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _shared import DEFAULT_DATA_DIR, load_closes  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pairs.quant.confirmation import confirm_batch  # noqa: E402
from pairs.quant.screening import confirm_out_of_sample  # noqa: E402

FLOAT_FIELDS = ("formation_hedge_ratio", "formation_intercept", "holdout_adf_stat", "holdout_pvalue",
                "johansen_trace", "johansen_critical_95")
BOOL_FIELDS = ("confirmed", "johansen_passed")


def log_price_window(data_dir: Path, n_symbols: int, n_bars: int) -> np.ndarray:
    """(n_bars, n_symbols) log closes: the last bars of the first symbols that have all of them."""
    closes = load_closes(data_dir).iloc[-n_bars:]
    complete = closes.columns[closes.notna().all()]
    if len(complete) < n_symbols:
        raise SystemExit(f"only {len(complete)} symbols have all of the last {n_bars} bars")
    return np.log(closes[complete[:n_symbols]].to_numpy())


def time_loop(log_prices: np.ndarray, directions: np.ndarray, holdout: int, max_pvalue: float):
    confirm_out_of_sample(log_prices[:, 0], log_prices[:, 1], holdout_bars=holdout, max_pvalue=max_pvalue)
    start = time.perf_counter()
    results = [
        confirm_out_of_sample(log_prices[:, y], log_prices[:, x], holdout_bars=holdout, max_pvalue=max_pvalue)
        for y, x in directions
    ]
    return time.perf_counter() - start, results


def time_batch(log_prices: np.ndarray, directions: np.ndarray, holdout: int, max_pvalue: float, repeats: int):
    confirm_batch(log_prices, directions[:4, 0], directions[:4, 1], holdout_bars=holdout, max_pvalue=max_pvalue)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch = confirm_batch(log_prices, directions[:, 0], directions[:, 1], holdout_bars=holdout,
                              max_pvalue=max_pvalue)
        seconds.append(time.perf_counter() - start)
    return seconds, batch


def differences(batch, loop_results) -> tuple[dict[str, float], dict[str, int]]:
    """Largest absolute difference per float field (NaN in both counts as equal); differing booleans."""
    largest, differing = {}, {}
    for name in FLOAT_FIELDS:
        expected = np.array([getattr(result, name) for result in loop_results], dtype=float)
        actual = getattr(batch, name)
        both_nan = np.isnan(expected) & np.isnan(actual)
        largest[name] = float(np.max(np.where(both_nan, 0.0, np.abs(actual - expected)), initial=0.0))
    for name in BOOL_FIELDS:
        expected = np.array([getattr(result, name) for result in loop_results], dtype=bool)
        differing[name] = int(np.sum(getattr(batch, name) != expected))
    return largest, differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=2000)
    parser.add_argument("--directions", type=int, default=300)
    parser.add_argument("--holdout", type=int, default=500, help="held-out bars (the default confirmation_bars)")
    parser.add_argument("--max-pvalue", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="timed confirm_batch runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    log_prices = log_price_window(args.data_dir.resolve(), args.symbols, args.bars)
    rng = np.random.default_rng(args.seed)
    ordered = np.array([(y, x) for y in range(args.symbols) for x in range(args.symbols) if y != x])
    directions = ordered[np.sort(rng.choice(len(ordered), size=args.directions, replace=False))]
    n_pairs = len({(min(y, x), max(y, x)) for y, x in directions.tolist()})

    loop_seconds, loop_results = time_loop(log_prices, directions, args.holdout, args.max_pvalue)
    batch_seconds, batch = time_batch(log_prices, directions, args.holdout, args.max_pvalue, args.repeats)
    largest, differing = differences(batch, loop_results)

    print(f"# Out-of-sample confirmation benchmark ({args.bars} hourly bars, {args.symbols} symbols, single thread)\n")
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}; "
          f"data in {args.data_dir.resolve()}\n")
    print(f"{len(directions)} random ordered directions (seed {args.seed}, {n_pairs} unordered pairs), "
          f"{args.holdout} held-out bars; {int(batch.confirmed.sum())} confirmed.\n")
    print("| method | wall time (s) | per direction (ms) |")
    print("|---|---:|---:|")
    print(f"| confirm_out_of_sample loop | {loop_seconds:.3f} | {1e3 * loop_seconds / len(directions):.2f} |")
    best = min(batch_seconds)
    print(f"| confirm_batch (best of {len(batch_seconds)}) | {best:.4f} | {1e3 * best / len(directions):.3f} |")
    print(f"| confirm_batch (first run) | {batch_seconds[0]:.4f} | "
          f"{1e3 * batch_seconds[0] / len(directions):.3f} |")
    print(f"\nSpeed-up: **{loop_seconds / best:.0f}x** (best run), "
          f"{loop_seconds / batch_seconds[0]:.0f}x (first run).\n")
    print("| field | max abs difference to the loop |")
    print("|---|---:|")
    for name, value in largest.items():
        print(f"| {name} | {value:.2e} |")
    for name, count in differing.items():
        print(f"| {name} (directions that differ) | {count} |")


if __name__ == "__main__":
    main()
