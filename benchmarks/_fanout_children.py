"""The steps bench_screen_fanout.py runs in child processes (``--child setup|inprocess|drive|ceiling``): building
the universe, the in-process reference run, driving one fanned-out run, and the machine's ceiling. Each runs in a
fresh process with Django set up from the environment the parent prepared (database, broker, one BLAS thread), and
returns a dict the parent receives as JSON. See bench_screen_fanout.py for what is measured and why; the steps live
here so that neither module passes the project's 500-line limit."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _shared import REPO_ROOT, django_setup, peak_rss_mib

EXCHANGE = "benchfanout"
TIMEFRAME = "1h"
HOUR_MS = 3_600_000
LOOKBACK_BARS = 2000
DERIVED_SHIFT_BARS = 500
# lookback + validation_bars (the formation window ends 500 bars before the newest since #17) + 100 bars of margin:
# with fewer, every derived symbol was left out as short of history and the benchmark screened the real ones only.
DERIVED_KEEP_BARS = 2600
RUN_TIMEOUT_SECONDS = 600
CEILING_PAIRS = 40_000


def derived_frames(data_dir: Path, n_derived: int):
    """(symbol, validated frame) of the derived symbols: real full-history symbols shifted by k*500 hours."""
    from pairs.marketdata.files import candle_files, read_candle_file
    from pairs.marketdata.validation import validate_candles

    frames = {}
    for symbol, path in candle_files(data_dir).items():
        frames[symbol], _ = validate_candles(read_candle_file(path), symbol=symbol, timeframe=TIMEFRAME)
    end = max(int(frame["timestamp"].iloc[-1]) for frame in frames.values())
    start = min(int(frame["timestamp"].iloc[0]) for frame in frames.values())
    full = [symbol for symbol, frame in frames.items()
            if int(frame["timestamp"].iloc[0]) == start and int(frame["timestamp"].iloc[-1]) == end]
    keep_from = end - (DERIVED_KEEP_BARS - 1) * HOUR_MS
    derived = []
    k = 1
    while len(derived) < n_derived:
        shift = k * DERIVED_SHIFT_BARS * HOUR_MS
        if keep_from - shift < start:
            raise SystemExit(f"not enough history for {n_derived} derived symbols (ran out at shift {k * 500} h)")
        for symbol in full:
            if len(derived) == n_derived:
                break
            frame = frames[symbol]
            shifted = frame.assign(timestamp=frame["timestamp"] + shift)
            shifted = shifted[(shifted["timestamp"] >= keep_from) & (shifted["timestamp"] <= end)]
            base = symbol[: -len("USDT")]
            derived.append((f"{base}S{k * DERIVED_SHIFT_BARS}USDT", shifted.reset_index(drop=True)))
        k += 1
    return derived, len(full), end


def setup_child(data_dir: Path, n_symbols: int) -> dict:
    """Migrate, import the real files and the derived symbols, configure the selection."""
    start = time.perf_counter()
    django_setup()
    migrate_seconds = time.perf_counter() - start
    from django.db import transaction

    from pairs.models import StrategyConfig
    from pairs.services.market_data import (
        candles_import_directory,
        candles_upsert,
        instrument_get_or_create_for_import,
    )
    from pairs.services.screening import screening_run_start

    start = time.perf_counter()
    summary = candles_import_directory(directory=data_dir, timeframe=TIMEFRAME, exchange=EXCHANGE)
    if summary.failed:
        raise SystemExit(f"import failed: {[f.error for f in summary.failed]}")
    import_seconds = time.perf_counter() - start

    config, _ = StrategyConfig.objects.update_or_create(
        pk=1, defaults={"exchange": EXCHANGE, "quote": "USDT", "timeframe": TIMEFRAME, "lookback_bars": LOOKBACK_BARS}
    )
    # How many real symbols the window keeps decides how many derived ones are needed.
    probe, window = screening_run_start(config=config, lookback_bars=LOOKBACK_BARS)
    n_real = len(window.symbols)
    probe.delete()
    derived, n_full, _ = derived_frames(data_dir, max(0, n_symbols - n_real))
    start = time.perf_counter()
    derived_rows = 0
    for symbol, frame in derived:
        with transaction.atomic():
            instrument = instrument_get_or_create_for_import(exchange=EXCHANGE, symbol=symbol)
            derived_rows += candles_upsert(instrument=instrument, timeframe=TIMEFRAME, candles=frame)
    derived_seconds = time.perf_counter() - start
    probe, window = screening_run_start(config=config, lookback_bars=LOOKBACK_BARS)
    probe.delete()
    import numpy as np

    np.save(os.environ["BENCH_WINDOW_FILE"], np.log(window.closes))
    return {"database": database_version(), "migrate_seconds": migrate_seconds, "real_files": len(summary.files),
            "real_rows": summary.rows, "real_in_window": n_real, "real_excluded": sorted(window.excluded),
            "import_seconds": import_seconds, "full_history_symbols": n_full, "derived": len(derived),
            "derived_rows": derived_rows, "derived_seconds": derived_seconds, "window_symbols": len(window.symbols),
            "directions": len(window.symbols) * (len(window.symbols) - 1)}


def database_version() -> str:
    """The database the runs write to, for the report."""
    from django.db import connection

    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            return f"MariaDB/MySQL {cursor.fetchone()[0]}"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL as in settings)"


def reset_pairs() -> None:
    """Every run starts from no pairs (the benchmark's database holds nothing else)."""
    from pairs.models import Pair, PairTest

    PairTest.objects.all().delete()
    Pair.objects.all().delete()


def inprocess_child() -> dict:
    """The whole screening in this one process (``screening_run``, no Celery), the reference for the fan-out; then one
    ``screen()`` call over the same window's directions."""
    django_setup(migrate=False)
    import pairs.services.screening as screening
    from pairs.models import StrategyConfig

    reset_pairs()
    config = StrategyConfig.current()
    blocks = [0]
    original = screening.screening_block

    def counted(*args, **kwargs):
        blocks[0] += 1
        return original(*args, **kwargs)

    screening.screening_block = counted
    start, cpu_start = time.perf_counter(), time.process_time()
    outcome = screening.screening_run(config=config, lookback_bars=LOOKBACK_BARS)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    run = outcome.run
    # Reference: the same window's directions in one screen() call (what the blocks add up to, without the
    # per-block work and without the database and the finish).
    import numpy as np

    from pairs.quant.screening import screen

    log_closes = np.log(outcome.window.closes)
    start = time.perf_counter()
    whole = screen(log_closes)
    one_call = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": cpu, "blocks": blocks[0], "tests": run.n_tests,
            "passed": run.n_passed, "candidates": run.n_candidates, "status": run.status,
            "symbols": run.n_symbols, "one_call_seconds": one_call, "one_call_tests": len(whole),
            "peak_rss_mib": peak_rss_mib()}


def drive_child() -> dict:
    """Send screen_pairs to the running worker and wait for the run to succeed (the worker is up already)."""
    django_setup(migrate=False)
    from pairs.models import CointegrationRun
    from pairs.tasks import screen_pairs

    reset_pairs()
    last = CointegrationRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    sent_at = time.time()
    start = time.perf_counter()
    screen_pairs.apply_async()
    while True:
        row = (CointegrationRun.objects.filter(pk__gt=last).order_by("pk")
               .values("pk", "status", "error", "n_tests", "n_passed", "n_candidates", "n_symbols").first())
        if row and row["status"] == CointegrationRun.Status.SUCCEEDED:
            seconds = time.perf_counter() - start
            break
        if row and row["status"] == CointegrationRun.Status.FAILED:
            raise SystemExit(f"run {row['pk']} failed: {row['error']}")
        if time.perf_counter() - start > RUN_TIMEOUT_SECONDS:
            raise SystemExit(f"no succeeded run after {RUN_TIMEOUT_SECONDS} s (last seen: {row})")
        time.sleep(0.1)
    return {"seconds": seconds, "sent_at": sent_at, "done_at": sent_at + seconds, "tests": row["n_tests"],
            "passed": row["n_passed"], "candidates": row["n_candidates"], "symbols": row["n_symbols"]}


def ceiling_child(window_file: Path, barrier: Path) -> dict:
    """The machine's own ceiling: screen() on a fixed 40,000 directions of the window, started with the others
    at once (a file barrier), no Celery and no database."""
    import numpy as np

    sys.path.insert(0, str(REPO_ROOT))
    from pairs.quant.cointegration import all_ordered_pairs
    from pairs.quant.screening import screen

    log_closes = np.load(window_file)
    pairs = all_ordered_pairs(log_closes.shape[1])[:CEILING_PAIRS]
    screen(log_closes, pairs[:1000])  # warm-up
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)
    start, cpu_start = time.perf_counter(), time.process_time()
    screen(log_closes, pairs)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
