"""Benchmark ``manage.py select_pairs`` as a whole command against a statsmodels ``coint`` loop (#18).

Run from the repository root:  python benchmarks/bench_select_pairs.py [--symbols 100] [--database-url URL]

Data: the hourly Binance candle files in ../shared/data/binance-usdt-1h-2021, read in place. The first ``--symbols``
symbols with the whole history are imported with ``candles_import_directory`` (whole files). Past the 100 symbols
that cover the whole range, the universe is extended synthetically, as bench_cointegration.py does: symbol ``k`` of
the extension gets the last 2,500 closes (lookback + validation_bars: the command's formation window ends 500 bars
before the newest) of real symbol ``k mod 100`` taken ``300 (1 + k // 100)`` bars earlier, stored as candles on the
newest hours (named ``<SYMBOL>D<k>USDT``).

Database: a temporary SQLite file (default), or ``--database-url mysql://...`` (dropped and created again for the
benchmark, dropped at the end; use a database of the benchmark's own).

What is timed, in one run of this script:
1. the command ``python manage.py select_pairs --lookback 2000 --json FILE`` in a fresh process, start-up and
   imports included, wall time and the process's peak RSS (``wait4``). The child gets no ``*_NUM_THREADS``
   variables: the command limits its own BLAS threads (``core.threads``); nor ``PYTHONDONTWRITEBYTECODE`` (the
   sandboxes here export it): the command runs as deployed, from the bytecode cache the warm-up run writes, instead
   of compiling the project's modules at every start (about 0.1 s, docs/BENCHMARKS.md section 19). One warm-up run
   (it creates the pairs),
   then ``--repeats`` timed runs on a quiet machine and as many with ``--load-processes`` CPU-bound processes
   (``while True: pass``) running beside it, interleaved;
2. statsmodels ``coint(trend="c", autolag="aic")`` on ``--sample`` random directions of the same window (this
   process, one BLAS thread), extrapolated to all N (N - 1) directions the command tests. The p-values the command
   wrote for those directions are compared with coint's.

Speed-up = extrapolated loop / best quiet command time; load ratio = best loaded / best quiet.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _shared import (  # noqa: E402
    DEFAULT_DATA_DIR,
    REPO_ROOT,
    benchmark_database,
    command_line,
    django_setup,
    load_average,
    machine_description,
    print_row,
    print_table_head,
)

LOOKBACK_BARS = 2000
FULL_HISTORY_SYMBOLS = 100
# 300, not 350 as before: a derived symbol now takes lookback + validation_bars (2,500) bars, and the tenth
# hundred (offset 2,700) must still fit in the 5,481 bars of the shared files.
DERIVED_OFFSET_STEP = 300
EXCHANGE = "bybit"  # the strategy configuration's default exchange: the command screens it unchanged
TARGET_SPEEDUP = 400.0
TARGET_LOAD_RATIO = 2.5
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "STATARB_BLAS_THREADS")


def full_history_files(data_dir: Path) -> list[Path]:
    """The candle files whose history starts at the data's first bar, by name."""
    import pandas as pd

    firsts = {path: int(pd.read_csv(path, usecols=["timestamp"], nrows=1)["timestamp"].iloc[0])
              for path in sorted(data_dir.glob("*.csv.gz"))}
    first = min(firsts.values())
    return [path for path, stamp in firsts.items() if stamp == first]


def populate(data_dir: Path, n_symbols: int) -> dict:
    """Import the real symbols and store the synthetic extension; returns what was stored."""
    import pandas as pd

    from pairs.models import StrategyConfig
    from pairs.services.candles import candles_upsert
    from pairs.services.market_data import candles_import_directory, instrument_get_or_create_for_import

    files = full_history_files(data_dir)[:FULL_HISTORY_SYMBOLS]
    real = [path.name.split(".")[0] for path in files]
    start = time.perf_counter()
    summary = candles_import_directory(directory=data_dir, timeframe="1h", exchange=EXCHANGE,
                                       symbols=real[:n_symbols])
    if summary.failed:
        raise SystemExit(f"import failed: {[f.error for f in summary.failed]}")
    rows = summary.rows
    frames = {symbol: pd.read_csv(path, usecols=["timestamp", "open", "high", "low", "close", "volume"])
              for symbol, path in zip(real, files, strict=True)} if n_symbols > len(real) else {}
    # The command's formation window ends validation_bars before the newest bar (#17): a derived symbol covers both.
    bars = LOOKBACK_BARS + StrategyConfig.current().validation_bars
    for k in range(max(0, n_symbols - len(real))):
        symbol = real[k % len(real)]
        frame = frames[symbol]
        offset = DERIVED_OFFSET_STEP * (1 + k // len(real))
        end = len(frame) - offset
        if end < bars:
            raise SystemExit(f"not enough history for {n_symbols} symbols")
        derived = frame.iloc[end - bars : end].copy()
        derived["timestamp"] = frame["timestamp"].to_numpy()[-bars:]
        name = f"{symbol.removesuffix('USDT')}D{k}USDT"
        instrument = instrument_get_or_create_for_import(exchange=EXCHANGE, symbol=name)
        rows += candles_upsert(instrument=instrument, timeframe="1h", candles=derived.reset_index(drop=True))
    return {"rows": rows, "real": min(n_symbols, len(real)), "derived": max(0, n_symbols - len(real)),
            "seconds": time.perf_counter() - start}


def command_window():
    """The (bars x symbols) closes the command will screen, and its symbols, read as the command reads them."""
    from pairs.models import StrategyConfig
    from pairs.services.screening import formation_window

    # The formation window ends validation_bars before the newest bar (#17): the same call the command makes.
    return formation_window(config=StrategyConfig.current(), lookback_bars=LOOKBACK_BARS).window


def statsmodels_loop(log_prices, sample: int, seed: int = 0) -> tuple[float, list[tuple[int, int]], list[float]]:
    """Seconds per direction of statsmodels' coint over ``sample`` random directions, the directions, p-values."""
    import numpy as np
    from statsmodels.tsa.stattools import coint

    rng = np.random.default_rng(seed)
    n = log_prices.shape[1]
    directions = []
    while len(directions) < sample:
        y, x = (int(v) for v in rng.choice(n, size=2, replace=False))
        directions.append((y, x))
    coint(log_prices[:, 0], log_prices[:, 1], trend="c", autolag="aic")  # warm-up
    pvalues = []
    start = time.perf_counter()
    for y, x in directions:
        pvalues.append(float(coint(log_prices[:, y], log_prices[:, x], trend="c", autolag="aic")[1]))
    return (time.perf_counter() - start) / sample, directions, pvalues


def run_command(database_url: str, json_path: Path | None, processes: int = 1) -> dict:
    """``manage.py select_pairs`` in a fresh process: wall seconds, peak RSS (MiB) and CPU seconds."""
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, "PYTHONDONTWRITEBYTECODE")}
    env.update(DATABASE_URL=database_url, DEBUG="0", DJANGO_SETTINGS_MODULE="statarb_site.settings.local",
               STATARB_SCREEN_PROCESSES=str(processes))  # 0: the command's default (its share of the cores)
    command = [sys.executable, "manage.py", "select_pairs", "--lookback", str(LOOKBACK_BARS), "--verbosity", "0"]
    if json_path is not None:
        command += ["--json", str(json_path)]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"select_pairs failed (exit status {process.returncode})")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime}


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--database-url", default=None, help="a mysql:// database of the benchmark's own")
    parser.add_argument("--sample", type=int, default=200, help="directions timed with statsmodels' coint")
    parser.add_argument("--repeats", type=int, default=2, help="timed command runs, quiet and loaded each")
    parser.add_argument("--processes", type=int, default=0,
                        help="STATARB_SCREEN_PROCESSES of the command (default 0: the cores it may use)")
    parser.add_argument("--load-processes", type=int, default=3, help="CPU-bound processes for the loaded runs")
    args = parser.parse_args()

    with benchmark_database("bench_select_pairs", args.database_url, fresh=args.database_url is not None) as url:
        django_setup(url)
        import numpy as np
        from django.db import connection

        stored = populate(args.data_dir, args.symbols)
        window = command_window()
        log_prices = np.log(window.closes)
        n = len(window.symbols)
        loop_per_direction, directions, reference = statsmodels_loop(log_prices, args.sample)
        connection.close()
        with tempfile.TemporaryDirectory() as scratch:
            json_path = Path(scratch) / "selection.json"
            # Only the warm-up writes every test to JSON (the p-values compared below): a list of N (N - 1) dicts is
            # an option of the command, not part of a screening run, and for 1,000 symbols it costs more than the run.
            warm = run_command(url, json_path if args.symbols <= 500 else None, args.processes)
            quiet, loaded = [], []
            for _ in range(args.repeats):
                quiet.append(run_command(url, None, args.processes))
                if args.load_processes:
                    hogs = start_hogs(args.load_processes)
                    try:
                        time.sleep(1.0)
                        loaded.append(run_command(url, None, args.processes))
                    finally:
                        stop_hogs(hogs)
            report = json.loads(json_path.read_text()) if json_path.exists() else None
        vendor = connection.vendor
    report_results(args, stored, n, window, warm, quiet, loaded, loop_per_direction, directions, reference, report,
                   vendor)


def exactness(window, directions, reference, report) -> float:
    by_key = {(t["y"], t["x"]): t["pvalue"] for t in report["tests"]}
    differences = [abs(by_key[(window.symbols[y], window.symbols[x])] - p)
                   for (y, x), p in zip(directions, reference, strict=True)]
    return max(differences)


def report_results(args, stored, n, window, warm, quiet, loaded, loop_per_direction, directions, reference, report,
                   vendor) -> None:
    n_directions = n * (n - 1)
    loop_total = loop_per_direction * n_directions
    best_quiet = min(r["seconds"] for r in quiet)
    print(f"# select_pairs as a whole command, {n} symbols x {LOOKBACK_BARS} bars ({vendor})\n")
    print(f"`{command_line('benchmarks/bench_select_pairs.py')}`; {machine_description()}; load average at the "
          f"end {load_average()}. Candles: {stored['real']} real symbols (whole files) + {stored['derived']} "
          f"synthetic (earlier windows of the real ones), {stored['rows']:,} rows stored in {stored['seconds']:.1f} s."
          f" The command screened {n_directions:,} directions"
          + (f" ({report['n_passed']} passed, {report['n_candidates']} confirmed candidates)" if report else "")
          + f". STATARB_SCREEN_PROCESSES={args.processes or '0 (the cores)'}; only the warm-up run writes --json"
          + (" (not for more than 500 symbols: no p-value check)" if report is None else "")
          + ". The runs use the bytecode cache the warm-up wrote, as a deployment does.\n")
    print_table_head(["run", "wall (s)", "CPU (s)", "peak RSS (MiB)"], "lrrr")
    print_row("warm-up (creates the pairs)", f"{warm['seconds']:.2f}", f"{warm['cpu']:.2f}",
              f"{warm['peak_rss_mib']:.0f}")
    for k, run in enumerate(quiet):
        print_row(f"quiet {k + 1}", f"{run['seconds']:.2f}", f"{run['cpu']:.2f}", f"{run['peak_rss_mib']:.0f}")
    for k, run in enumerate(loaded):
        print_row(f"{args.load_processes} CPU hogs beside it, {k + 1}", f"{run['seconds']:.2f}", f"{run['cpu']:.2f}",
                  f"{run['peak_rss_mib']:.0f}")
    print()
    checked = (f"Max |p-value difference| against the command's on those directions: "
               f"{exactness(window, directions, reference, report):.2e}." if report is not None
               else "The p-values were not compared (no --json above 500 symbols).")
    print(f"statsmodels coint loop: {1e3 * loop_per_direction:.2f} ms per direction over {len(directions)} sampled "
          f"directions, {loop_total:,.1f} s extrapolated to {n_directions:,}. {checked}\n")
    speedup = loop_total / best_quiet
    print(f"Speed-up (statsmodels loop / best quiet command): **{speedup:,.0f}x** (target {TARGET_SPEEDUP:.0f}x: "
          f"{'met' if speedup >= TARGET_SPEEDUP else 'not met'}).")
    if loaded:
        ratio = min(r["seconds"] for r in loaded) / best_quiet
        print(f"Under load (best loaded / best quiet): **{ratio:.2f}x** (target at most {TARGET_LOAD_RATIO}x: "
              f"{'met' if ratio <= TARGET_LOAD_RATIO else 'not met'}).")


if __name__ == "__main__":
    main()
