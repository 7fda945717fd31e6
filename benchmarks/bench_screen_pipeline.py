"""Benchmark the end-to-end screening run (``pairs.services.screening.screening_run``) over the database.

Run from the repository root:  python benchmarks/bench_screen_pipeline.py

Data: the 126 hourly Binance candle files in ../shared/data/binance-usdt-1h-2021 (read in place), imported with
``candles_import_directory`` (about 628k rows) into instruments of the exchange id ``benchmark``.

Databases (each in its own child process, Django reads DATABASE_URL once at setup; DEBUG=0 as in production):
* a temporary SQLite file (the embedded default), always;
* MariaDB at ``BENCH_DATABASE_URL`` (default mysql://root@127.0.0.1:3306/statarb_bench; created when missing and
  migrated; the benchmark's rows are deleted before and after), skipped with a note when unreachable or with
  --no-mariadb.

Per database: ``screening_run`` with a 2,000-bar lookback, twice: run 1 finds no pairs and creates them, run 2 (same
window) updates them. Phases are timed by wrapping the module-level functions ``screening_run`` calls
(no change to its code): window load (``screening_run_start``, of which ``price_window``), screen
(``screening_block`` calls), finish (``screening_run_finish``, of which q-values ``merge_and_adjust``, the
Hurst exponent and mean crossings of the passing directions and the out-of-sample + Johansen confirmations of the
candidates, batched, ``series_and_confirmations``, and the writes ``_write``), and the total.

Then, without a database, the pure screen on the 126-symbol and 500-symbol universes that bench_cointegration.py
builds, each in a fresh process so its peak RSS (ru_maxrss, including loading the files) is its own: ``screen``
with its defaults (Engle-Granger + spread statistics, no Hurst), then what the run adds on top before the
confirmations, as ``screening_run_finish`` does it: q-values over all tests (``merge_and_adjust``) and the Hurst
exponent and mean crossings of the directions that pass (p <= 0.05 and q <= 0.10, ``add_series_statistics``).

Single-threaded: the BLAS thread variables are set to 1 before numpy loads (inherited by the child processes).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _shared import (  # noqa: E402
    DEFAULT_DATA_DIR,
    REPO_ROOT,
    django_setup,
    ensure_mysql_database,
    instrument_phases,
    mysql_problem,
    peak_rss_mib,
)
from bench_candle_upsert import (  # noqa: E402
    BENCH_EXCHANGE,
    TIMEFRAME,
    bench_database_url,
    database_description,
    delete_bench_rows,
    run_worker,
)

LOOKBACK_BARS = 2000
TARGET_SECONDS = 30.0
TARGET_PEAK_GIB = 4.0
# Wrapped in pairs.services.screening: (attribute, label), in report order.
PHASES = (
    ("screening_run_start", "window load (screening_run_start)"),
    ("price_window", "  of which price_window (candle query + grid)"),
    ("screening_block", "screen (screening_block)"),
    ("screening_run_finish", "finish (screening_run_finish)"),
    ("merge_and_adjust", "  of which q-values (merge_and_adjust)"),
    ("series_and_confirmations", "  of which Hurst + crossings and confirmations of the passing "
                                 "(series_and_confirmations)"),
    ("_write", "  of which writes (_write)"),
)

# Wrapped in pairs.quant.screening for the pure screen.
SCREEN_PARTS = (
    ("engle_granger_batch", "Engle-Granger"),
    ("_moments", "moment matrices"),
    ("hurst_exponent", "Hurst"),
    ("mean_crossings", "crossings"),
)




# --- worker: one database -------------------------------------------------------------------------------------


def database_worker(data_dir: Path) -> dict:
    django_setup()
    from django.db import connection

    import pairs.services.screening as screening
    from pairs.models import Pair, PairTest, StrategyConfig
    from pairs.services.market_data import candles_import_directory

    delete_bench_rows()
    try:
        start = time.perf_counter()
        summary = candles_import_directory(directory=data_dir, timeframe=TIMEFRAME, exchange=BENCH_EXCHANGE)
        import_seconds = time.perf_counter() - start
        if summary.failed:
            raise SystemExit(f"import failed: {[f.error for f in summary.failed]}")

        # Unsaved: the defaults of the strategy configuration, on the benchmark's instruments.
        config = StrategyConfig(exchange=BENCH_EXCHANGE, quote="USDT", timeframe=TIMEFRAME)
        seconds = {name: 0.0 for name, _ in PHASES}
        calls = {name: 0 for name, _ in PHASES}
        instrument_phases(screening, [name for name, _ in PHASES], seconds, calls)
        runs = []
        for _ in range(2):
            for name in seconds:
                seconds[name], calls[name] = 0.0, 0
            start = time.perf_counter()
            outcome = screening.screening_run(config=config, lookback_bars=LOOKBACK_BARS)
            total = time.perf_counter() - start
            run = outcome.run
            runs.append({
                "total": total,
                "seconds": dict(seconds),
                "calls": dict(calls),
                "symbols": run.n_symbols,
                "excluded": len(outcome.window.excluded),
                "tests": run.n_tests,
                "passed": run.n_passed,
                "confirmed_tested": len(outcome.confirmation),
                "candidates": run.n_candidates,
                "pairs": Pair.objects.filter(y_instrument__exchange=BENCH_EXCHANGE).count(),
                "pair_tests": PairTest.objects.filter(run=run).count(),
                "status": run.status,
            })
        description = database_description()
    finally:
        delete_bench_rows()
    return {
        "vendor": connection.vendor,
        "description": description,
        "rows": summary.rows,
        "symbols_imported": len(summary.files),
        "import_seconds": import_seconds,
        "runs": runs,
        "peak_rss_mib": peak_rss_mib(),
    }


# --- worker: the pure screen of a bench_cointegration universe --------------------------------------------------


def screen_worker(data_dir: Path, n_symbols: int | None) -> dict:
    import numpy as np
    from bench_cointegration import N_BARS, build_universe, load_closes

    sys.path.insert(0, str(REPO_ROOT))
    import pairs.quant.screening as quant_screening
    from pairs.quant.screening import add_series_statistics, merge_and_adjust, passing_directions, screen

    closes = load_closes(data_dir)
    log_prices = build_universe(closes, n_symbols or closes.shape[1])
    parts = {name: 0.0 for name, _ in SCREEN_PARTS}
    counts = {name: 0 for name, _ in SCREEN_PARTS}
    instrument_phases(quant_screening, [name for name, _ in SCREEN_PARTS], parts, counts)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = screen(log_prices)
    screen_seconds = time.perf_counter() - start
    # What screening_run_finish adds before the confirmations (default max p-value 0.05, max q-value 0.10).
    result = merge_and_adjust([result])
    # The selection's decision (``passing_directions``: the family p-value, twice the lower of a pair's two).
    passed = np.flatnonzero(passing_directions(result, max_pvalue=0.05, max_qvalue=0.10, min_half_life=0.0,
                                               max_half_life=np.inf)[0])
    add_series_statistics(result, log_prices, passed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "parts": parts,
        "cpu_seconds": cpu_seconds,
        "symbols": log_prices.shape[1],
        "bars": N_BARS,
        "tests": len(result),
        "below_005": int((result.pvalue <= 0.05).sum()),
        "passed": len(passed),
        "screen_seconds": screen_seconds,
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "finite": bool(np.isfinite(result.pvalue).all()),
    }


# --- the report -------------------------------------------------------------------------------------------------


def run_screen_worker(data_dir: Path, n_symbols: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    try:
        completed = subprocess.run(
            [sys.executable, __file__, "--screen-worker", str(n_symbols), "--result-file", str(result_path),
             "--data-dir", str(data_dir)],
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"screen worker for {n_symbols} symbols failed (exit status {completed.returncode})")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def print_database_report(results: dict[str, dict]) -> None:
    labels = list(results)
    print("## Import (candles_import_directory: read, validate, upsert, one transaction per file)\n")
    print("| database | files | rows | time (s) | rows/s |")
    print("|---|---:|---:|---:|---:|")
    for label, result in results.items():
        print(f"| {label} | {result['symbols_imported']} | {result['rows']:,} | {result['import_seconds']:.2f} "
              f"| {result['rows'] / result['import_seconds']:,.0f} |")

    print(f"\n## screening_run, lookback {LOOKBACK_BARS} bars (run 1 creates the pairs, run 2 updates them)\n")
    columns = [(label, k) for label in labels for k in range(2)]
    print("| phase | " + " | ".join(f"{label} run {k + 1} (s)" for label, k in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, text in PHASES:
        cells = []
        for label, k in columns:
            run = results[label]["runs"][k]
            count = run["calls"][name]
            suffix = f" ({count} calls)" if name == "screening_block" else ""
            cells.append(f"{run['seconds'][name]:.2f}{suffix}")
        print(f"| {text} | " + " | ".join(cells) + " |")
    print("| **total (screening_run)** | " + " | ".join(
        f"**{results[label]['runs'][k]['total']:.2f}**" for label, k in columns) + " |")

    print("\n| count | " + " | ".join(f"{label} run {k + 1}" for label, k in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for key, text in (
        ("symbols", "symbols screened"), ("excluded", "symbols left out (short history)"),
        ("tests", "tests (ordered pairs)"), ("passed", "passed (p <= 0.05 and q <= 0.10)"),
        ("confirmed_tested", "confirmations run (passed, half-life in range)"),
        ("candidates", "candidates (confirmed)"), ("pairs", "pairs stored after the run"),
        ("pair_tests", "pair tests written by the run"),
    ):
        print(f"| {text} | " + " | ".join(f"{results[label]['runs'][k][key]:,}" for label, k in columns) + " |")
    statuses = {results[label]["runs"][k]["status"] for label, k in columns}
    print(f"\nRun status: {', '.join(sorted(statuses))}. Worker peak RSS: "
          + ", ".join(f"{label} {result['peak_rss_mib']:,.0f} MiB" for label, result in results.items()) + ".")
    if len(labels) == 2:
        a, b = labels
        ratio = results[b]["runs"][0]["total"] / results[a]["runs"][0]["total"]
        print(f"Run 1 total, {b} / {a}: {ratio:.2f}x. Same data, same results expected on both: "
              + ("yes" if all(results[a]["runs"][k][key] == results[b]["runs"][k][key]
                              for k in range(2) for key in ("tests", "passed", "candidates")) else "NO") + ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--no-mariadb", action="store_true", help="only the temporary SQLite database")
    parser.add_argument("--no-pure-screen", action="store_true", help="skip the database-free 126/500 screens")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--screen-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()

    if args.worker:
        args.result_file.write_text(json.dumps(database_worker(data_dir)))
        return
    if args.screen_worker is not None:
        args.result_file.write_text(json.dumps(screen_worker(data_dir, args.screen_worker or None)))
        return

    script = Path(__file__).resolve()
    started = time.perf_counter()
    print("# Screening pipeline benchmark (screening_run over the database, single thread)\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"candles from {data_dir}\n")
    results, notes = {}, []
    with tempfile.TemporaryDirectory(prefix="statarb-bench-") as directory:
        sqlite_url = f"sqlite:///{Path(directory) / 'bench.sqlite3'}"
        results["SQLite"] = run_worker(script, sqlite_url, ["--data-dir", str(data_dir)])
    if not args.no_mariadb:
        url = bench_database_url()
        problem = mysql_problem(ensure_mysql_database, url)
        if problem is None:
            results["MariaDB"] = run_worker(script, url, ["--data-dir", str(data_dir)])
        else:
            notes.append(f"MariaDB skipped: {problem}")
    for label, result in results.items():
        print(f"* {label}: {result['description']}")
    for note in notes:
        print(f"* {note}")
    print()
    print_database_report(results)

    if not args.no_pure_screen:
        print("\n## Pure screen (no database): pairs.quant.screening.screen, all ordered pairs\n")
        print("Universes as in bench_cointegration.py (the 126 real symbols, 7 of them back-filled; 500 = the 126 "
              "plus earlier windows of the full-history symbols). Each in a fresh process.\n")
        parts_head = " | ".join(f"{text} (s)" for _, text in SCREEN_PARTS)
        print("| universe | bars | tests | p <= 0.05 | passed: p <= 0.05, q <= 0.10 (Hurst + crossings computed) "
              f"| screen() (s) | total (s) | total CPU time (s) | {parts_head} | process peak RSS (MiB) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(SCREEN_PARTS) + "---:|")
        pure = {}
        for n_symbols in (0, 500):
            result = run_screen_worker(data_dir, n_symbols)
            pure[result["symbols"]] = result
            print(f"| {result['symbols']} symbols | {result['bars']:,} | {result['tests']:,} "
                  f"| {result['below_005']:,} | {result['passed']:,} | {result['screen_seconds']:.2f} "
                  f"| {result['seconds']:.2f} | {result['cpu_seconds']:.2f} | "
                  + " | ".join(f"{result['parts'][name]:.2f}" for name, _ in SCREEN_PARTS)
                  + f" | {result['peak_rss_mib']:,.0f} |")
        print("\nscreen(): `screen(log_prices)` with its defaults (Engle-Granger + spread statistics, no Hurst). "
              "total: that plus the q-values over all tests and the Hurst exponent and mean crossings of the passing "
              "directions, as screening_run_finish adds them (the confirmations are not included). CPU time is the "
              "process's own (time.process_time) during the total: well below the wall time means the process waited "
              "for a core (other load on the machine).")
        worst_seconds = max(r["seconds"] for r in pure.values())
        worst_rss = max(r["peak_rss_mib"] for r in pure.values()) / 1024
        met = "met" if worst_seconds < TARGET_SECONDS and worst_rss < TARGET_PEAK_GIB else "NOT met"
        print(f"\nTarget: 126 symbols and a 500-symbol universe x {LOOKBACK_BARS:,} bars in under "
              f"{TARGET_SECONDS:.0f} s with peak memory under {TARGET_PEAK_GIB:.0f} GiB (screen + Hurst/crossings "
              f"of the passing): **{met}** "
              f"(slowest {worst_seconds:.1f} s, largest peak RSS {worst_rss:.2f} GiB).")
    print(f"\nWhole benchmark: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
