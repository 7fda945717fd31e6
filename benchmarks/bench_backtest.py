"""Benchmark the vectorised backtest (rolling z-scores + spread rule + trade accounting + statistics).

Run from the repository root:  python benchmarks/bench_backtest.py

Data: hourly Binance closes in ../shared/data/binance-usdt-1h-2021 (read in place), put on the full hourly grid
and forward-filled (the files share a few missing hours). The symbols that cover the whole range (100) give
9,900 ordered pairs; the first 5,000 (row-major: y = symbol 0 against every x, then symbol 1, ...) are used.

The last ``window + bars`` hours are loaded. Rolling z-scores (OLS over the previous ``window`` bars, no
look-ahead) are computed on all of them and the backtest runs on the last ``bars`` (default 2,000), with the
default rule and costs (taker 0.055% + slippage 0.02% per fill, funding 0.01% per 8 h). With ``--fill-model`` the
execution model of the strategy configuration's defaults is used too (``pairs.quant.fills``): fills at the next
bar's open (the files' opens; ``--execution-delay-bars`` later) and slippage 0.02% + 0.02 x the reference bar's
(high - low) / open; its time includes the slippage matrices, not the loading of the opens, highs and lows. Each
pair's holding limit is 3 half-lives of its spread over the first ``window`` bars (the fit of the first z-score),
which no backtested bar precedes. The pairs are not screened: the trading results only show the code does something
sensible, not an edge.

Timed single-threaded (BLAS thread variables set to 1 before numpy loads), for the whole universe at once and in
blocks of pairs; peak RSS is the process maximum so far (ru_maxrss).
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _shared import DEFAULT_DATA_DIR, load_closes  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pairs.quant.backtest import BacktestResult, Costs, backtest  # noqa: E402
from pairs.quant.cointegration import all_ordered_pairs  # noqa: E402
from pairs.quant.performance import trade_metrics  # noqa: E402
from pairs.quant.spread import half_life  # noqa: E402
from pairs.quant.spread_rule import ACTION_LABELS, RuleParams, max_holding_bars, rolling_zscore_pairs  # noqa: E402


def run_block(log_prices, times, y_index, x_index, window, params, costs, fills=None, delay=0
              ) -> tuple[float, float, BacktestResult]:
    start = time.perf_counter()
    fit = rolling_zscore_pairs(log_prices, y_index, x_index, window)
    z_seconds = time.perf_counter() - start

    start = time.perf_counter()
    # Half-life of each pair's spread over the formation bars, with the coefficients fitted on them.
    formation = log_prices[:window, y_index] - fit.intercept[window] - fit.hedge_ratio[window] * log_prices[
        :window, x_index
    ]
    limits = max_holding_bars(half_life(formation), params)
    prices = np.exp(log_prices[window:])
    execution = {}
    if fills is not None:
        opens, highs, lows = (matrix[window:] for matrix in fills)
        slippage = costs.slippage_fractions(opens, highs, lows)
        execution = {"opens_y": opens[:, y_index], "opens_x": opens[:, x_index], "slippage_y": slippage[:, y_index],
                     "slippage_x": slippage[:, x_index], "execution_delay_bars": delay}
    result = backtest(
        prices[:, y_index], prices[:, x_index], fit.zscore[window:], fit.hedge_ratio[window:], params, costs,
        times[window:], max_holding_bars=limits, **execution,
    )
    return z_seconds, time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--bars", type=int, default=2000, help="backtested bars")
    parser.add_argument("--window", type=int, default=500, help="rolling OLS window (bars before each z)")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[5000, 1000])
    parser.add_argument("--fill-model", action="store_true", help="next-open fills with range slippage")
    parser.add_argument("--execution-delay-bars", type=int, default=0)
    args = parser.parse_args()

    load_start = time.perf_counter()
    closes = load_closes(args.data_dir.resolve(), full_history_only=True)
    panel = closes.iloc[-(args.window + args.bars) :]
    log_prices = np.log(panel.to_numpy())
    times = panel.index.to_numpy().astype("datetime64[ms]")
    pairs = all_ordered_pairs(closes.shape[1])[: args.pairs]
    fills = None
    params, costs = RuleParams(), Costs()
    if args.fill_model:
        fills = tuple(load_closes(args.data_dir.resolve(), full_history_only=True, column=column)
                      .iloc[-(args.window + args.bars) :][list(panel.columns)].to_numpy()
                      for column in ("open", "high", "low"))
        costs = Costs(slippage_model="range", slippage_factor=0.02)
    load_seconds = time.perf_counter() - load_start

    model = (f"fills at the next open + {args.execution_delay_bars} bar(s), range slippage" if args.fill_model
             else "fills at the previous close (no opens given)")
    print(f"# Backtest benchmark ({len(pairs):,} pairs x {args.bars:,} hourly bars, single thread; {model})\n")
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}; "
        f"{closes.shape[1]} full-range symbols, bars {panel.index[args.window]:%Y-%m-%d %H:%M} to "
        f"{panel.index[-1]:%Y-%m-%d %H:%M} UTC, rolling window {args.window} bars; data loaded in "
        f"{load_seconds:.1f} s (not timed below)\n"
    )
    print("| pairs per block | blocks | rolling z-scores (s) | rule + trades + statistics (s) | total (s) | trades | "
          "peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    last_results: list[BacktestResult] = []
    for block_size in args.block_sizes:
        z_total = backtest_total = 0.0
        results = []
        for start in range(0, len(pairs), block_size):
            block = pairs[start : start + block_size]
            z_seconds, backtest_seconds, result = run_block(
                log_prices, times, block[:, 0], block[:, 1], args.window, params, costs, fills,
                args.execution_delay_bars,
            )
            z_total += z_seconds
            backtest_total += backtest_seconds
            results.append(result)
        trades = sum(len(r.trades) for r in results)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {block_size:,} | {len(results)} | {z_total:.2f} | {backtest_total:.2f} | "
              f"{z_total + backtest_total:.2f} | {trades:,} | {peak_mib:,.0f} |")
        last_results = results

    returns = np.concatenate([r.trades.ret for r in last_results])
    reasons = np.concatenate([r.trades.exit_reason for r in last_results])
    statistics = [s for r in last_results for s in r.statistics]
    metrics = trade_metrics(returns)
    traded = [s for s in statistics if s.trades]
    sharpes = np.array([s.sharpe for s in traded if s.sharpe is not None])
    print("\nWhat the unscreened pairs did (default rule and costs; not an edge estimate):\n")
    print("| trades | pairs with trades | win rate | profit factor | mean return per trade | exits: "
          + " / ".join(ACTION_LABELS[code] for code in range(3, 7)) + " | median pair Sharpe |")
    print("|---|---|---|---|---|---|---|")
    counts = np.bincount(reasons, minlength=7)[3:7]
    print(f"| {metrics.trades:,} | {len(traded):,} / {len(statistics):,} | {metrics.win_rate:.1%} | "
          f"{metrics.profit_factor:.2f} | {metrics.mean:.4%} | {' / '.join(f'{c:,}' for c in counts)} | "
          f"{np.median(sharpes):.2f} |")


if __name__ == "__main__":
    main()
