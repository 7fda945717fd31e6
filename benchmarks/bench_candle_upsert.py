"""Benchmark the candle bulk upsert (``pairs.services.market_data.candles_upsert``) into MariaDB, and SQLite.

Run from the repository root:  python benchmarks/bench_candle_upsert.py

Data: the 126 hourly Binance candle files in ../shared/data/binance-usdt-1h-2021 (read in place), about 628k
rows, read with ``read_candle_file`` and checked with ``validate_candles`` exactly as the file import does.

Database: ``BENCH_DATABASE_URL`` (default mysql://root@127.0.0.1:3306/statarb_bench). The database is created
when missing and migrated. The benchmark's rows belong to instruments of the exchange id ``benchmark`` and are
deleted before and after the run; nothing else in the database is touched. For comparison the same steps run
on a temporary SQLite file (skip with --no-sqlite). Each backend runs in its own child process, because Django
reads DATABASE_URL once, at setup. Django runs with DEBUG=0 (as in production: no query log).

Measured per backend, one ``candles_upsert`` call per symbol (each its own transaction, as the import does):
(a) first insert of all rows into an empty table (for these instruments);
(b) re-upsert of the same rows (every row is stored already, no value differs: nothing needs writing);
(c) re-upsert with every row changed (its volume + 1: every stored row is rewritten);
plus, separately, the time to read and to validate the files. After (c) the stored values of a few symbols are
compared with what was sent, and the row count with the number of bars. The target (>= 50,000 rows/s on MariaDB)
is judged on the slowest of the three passes.

MariaDB unreachable: a message and exit status 1; with BENCH_SKIP_MISSING_SERVICES=1, a note and exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import DEFAULT_DATA_DIR, django_setup, ensure_mysql_database, mysql_problem

DEFAULT_BENCH_DATABASE_URL = "mysql://root@127.0.0.1:3306/statarb_bench"
BENCH_EXCHANGE = "benchmark"
TIMEFRAME = "1h"
TARGET_ROWS_PER_SECOND = 50_000


# --- helpers shared with bench_screen_pipeline.py (no Django needed) ------------------------------------------


def bench_database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_BENCH_DATABASE_URL)


def skip_missing_services() -> bool:
    return os.environ.get("BENCH_SKIP_MISSING_SERVICES", "") in ("1", "true", "yes")


def run_worker(script: Path, database_url: str, extra_args: list[str]) -> dict:
    """Run ``script --worker`` with DATABASE_URL set and return the JSON it writes."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    try:
        env = dict(os.environ, DATABASE_URL=database_url)
        completed = subprocess.run(
            [sys.executable, str(script), "--worker", "--result-file", str(result_path), *extra_args],
            env=env, check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"benchmark worker for {database_url} failed (exit status {completed.returncode})")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)




def database_description() -> str:
    from django.db import connection

    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, @@log_bin"
            )
            version, pool, flush, log_bin = cursor.fetchone()
        return (
            f"MariaDB/MySQL {version} (innodb_buffer_pool_size {int(pool) // 2**20} MiB, "
            f"innodb_flush_log_at_trx_commit={flush}, log_bin={log_bin})"
        )
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version} (temporary file, WAL, synchronous=NORMAL as in settings)"


def delete_bench_rows() -> None:
    """Everything the benchmarks wrote: rows of the ``benchmark`` exchange's instruments and runs."""
    from pairs.models import Candle, CointegrationRun, Instrument, Pair, PairTest

    instruments = Instrument.objects.filter(exchange=BENCH_EXCHANGE)
    PairTest.objects.filter(run__exchange=BENCH_EXCHANGE).delete()
    Pair.objects.filter(y_instrument__exchange=BENCH_EXCHANGE).delete()
    Pair.objects.filter(x_instrument__exchange=BENCH_EXCHANGE).delete()
    CointegrationRun.objects.filter(exchange=BENCH_EXCHANGE).delete()
    Candle.objects.filter(instrument__in=instruments).delete()
    instruments.delete()


# --- the worker: one backend ------------------------------------------------------------------------------------


def worker(data_dir: Path) -> dict:
    django_setup()
    from django.db import connection

    from pairs.marketdata.files import candle_files, read_candle_file
    from pairs.marketdata.validation import validate_candles
    from pairs.models import Candle
    from pairs.services.market_data import candles_upsert, instrument_get_or_create_for_import

    delete_bench_rows()
    files = candle_files(data_dir)

    read_seconds = validate_seconds = 0.0
    frames = {}
    for symbol, path in files.items():
        start = time.perf_counter()
        raw = read_candle_file(path)
        middle = time.perf_counter()
        frames[symbol], _ = validate_candles(raw, symbol=symbol, timeframe=TIMEFRAME)
        read_seconds += middle - start
        validate_seconds += time.perf_counter() - middle
    n_rows = sum(len(frame) for frame in frames.values())
    instruments = {
        symbol: instrument_get_or_create_for_import(exchange=BENCH_EXCHANGE, symbol=symbol) for symbol in frames
    }
    changed = {symbol: frame.assign(volume=frame["volume"] + 1.0) for symbol, frame in frames.items()}

    in_driver = [0.0]

    def timed_execute(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            in_driver[0] += time.perf_counter() - start

    def upsert_all(frames_by_symbol) -> dict[str, float]:
        in_driver[0] = 0.0
        start = time.perf_counter()
        with connection.execute_wrapper(timed_execute):
            for symbol, frame in frames_by_symbol.items():
                candles_upsert(instrument=instruments[symbol], timeframe=TIMEFRAME, candles=frame)
        return {"total": time.perf_counter() - start, "driver": in_driver[0]}

    try:
        timings = {
            "first insert": upsert_all(frames),
            "re-upsert, same values": upsert_all(frames),
            "re-upsert, every row changed": upsert_all(changed),
        }
        stored = Candle.objects.filter(instrument__exchange=BENCH_EXCHANGE).count()
        if stored != n_rows:
            raise SystemExit(f"{stored} candles stored, expected {n_rows}")
        check_stored(instruments, changed)
        description = database_description()
    finally:
        start = time.perf_counter()
        delete_bench_rows()
        cleanup_seconds = time.perf_counter() - start
    return {
        "vendor": connection.vendor,
        "description": description,
        "symbols": len(frames),
        "rows": n_rows,
        "read_seconds": read_seconds,
        "validate_seconds": validate_seconds,
        "timings": timings,
        "cleanup_seconds": cleanup_seconds,
    }


def check_stored(instruments, frames, *, symbols: int = 5) -> None:
    """The stored bars of a few symbols are the ones sent (to 1e-12 relative: SQLite keeps 15 digits)."""
    import numpy as np

    from pairs.models import Candle

    columns = ["open", "high", "low", "close", "volume"]
    for symbol in list(frames)[:symbols]:
        rows = Candle.objects.filter(instrument=instruments[symbol], timeframe=TIMEFRAME).order_by("open_time")
        got = np.array(rows.values_list(*columns), dtype="float64")
        sent = frames[symbol][columns].to_numpy(dtype="float64")
        if got.shape != sent.shape or not np.allclose(got, sent, rtol=1e-12, atol=0):
            raise SystemExit(f"{symbol}: the stored candles differ from the ones sent")


# --- the report -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite comparison")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()

    if args.worker:
        args.result_file.write_text(json.dumps(worker(data_dir)))
        return

    url = bench_database_url()
    problem = mysql_problem(ensure_mysql_database, url)
    if problem is not None:
        print(f"bench_candle_upsert: MariaDB is needed for this benchmark and is unreachable.\n  {problem}\n"
              f"  Set BENCH_DATABASE_URL (now {url}) or start MariaDB.", file=sys.stderr)
        if skip_missing_services():
            print("BENCH_SKIP_MISSING_SERVICES=1: candle upsert benchmark skipped.")
            raise SystemExit(0)
        raise SystemExit(1)

    results = {"MariaDB": run_worker(Path(__file__), url, ["--data-dir", str(data_dir)])}
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="statarb-bench-") as directory:
            sqlite_url = f"sqlite:///{Path(directory) / 'bench.sqlite3'}"
            results["SQLite"] = run_worker(Path(__file__), sqlite_url, ["--data-dir", str(data_dir)])

    first = results["MariaDB"]
    n_rows = first["rows"]
    print("# Candle bulk upsert benchmark (candles_upsert, one call per symbol)\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{first['symbols']} symbols, {n_rows:,} hourly candles from {data_dir}\n")
    for label, result in results.items():
        print(f"* {label}: {result['description']}")
    print()

    print("## Reading and validating the files (not part of the upsert)\n")
    print("| step | time (s) | rows/s |")
    print("|---|---:|---:|")
    for step, key in (("read_candle_file", "read_seconds"), ("validate_candles", "validate_seconds")):
        print(f"| {step} | {first[key]:.2f} | {n_rows / first[key]:,.0f} |")
    both = first["read_seconds"] + first["validate_seconds"]
    print(f"| read + validate | {both:.2f} | {n_rows / both:,.0f} |")
    print()

    print(f"## Upsert of {n_rows:,} rows\n")
    labels = list(results)
    compare = "SQLite" in results
    head = " | ".join(f"{label} (s) | {label}: in execute (s) | {label} rows/s" for label in labels)
    print(f"| step | {head} |" + (" MariaDB rows/s / SQLite rows/s |" if compare else ""))
    print("|---|" + "---:|---:|---:|" * len(labels) + ("---:|" if compare else ""))
    for step in first["timings"]:
        cells = []
        for label in labels:
            timing = results[label]["timings"][step]
            cells.append(f"{timing['total']:.2f} | {timing['driver']:.2f} | {n_rows / timing['total']:,.0f}")
        ratio = ""
        if compare:
            ratio = f" {results['SQLite']['timings'][step]['total'] / first['timings'][step]['total']:.2f} |"
        print(f"| {step} | {' | '.join(cells)} |{ratio}")
    rates = {step: n_rows / timing["total"] for step, timing in first["timings"].items()}
    slowest = min(rates, key=rates.get)
    met = "met" if rates[slowest] >= TARGET_ROWS_PER_SECOND else "NOT met"
    print(
        "\n\"in execute\": time inside cursor.execute/executemany (driver and server; measured with "
        "connection.execute_wrapper); the rest is candles_upsert's Python work (timestamps, decimal text, SQL "
        "text) and the commit of each symbol's transaction."
    )
    print(
        f"\nTarget: candle upsert into MariaDB >= {TARGET_ROWS_PER_SECOND:,} rows/s in every pass: **{met}** "
        f"(" + "; ".join(f"{step} {rate:,.0f}" for step, rate in rates.items()) + f" rows/s; slowest: {slowest})."
    )
    print(f"Cleanup (deleting the benchmark's rows) took {first['cleanup_seconds']:.1f} s on MariaDB.")


if __name__ == "__main__":
    main()
