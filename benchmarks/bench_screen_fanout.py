"""Benchmark the Celery fan-out of the screening (``pairs.tasks.screen_pairs`` with STATARB_SCREEN_FANOUT=1).

Run from the repository root:  python benchmarks/bench_screen_fanout.py

What it shows: the same screening run through real ``celery -A statarb_site worker -Q selection,default
--pool prefork`` subprocesses with 1 worker process (``--concurrency 1``) and with 2 (``--concurrency 2``), timed
from ``screen_pairs.apply_async()`` until the run's CointegrationRun row says succeeded (the driver polls the
database every 0.1 s). For reference: the whole run in one process (``screening_run``, no Celery), one
``screen()`` call over all directions of the same window, and the machine's ceiling (``screen()`` on 40,000
directions in one process alone, then in two processes started together: how much a second process can add on
this machine at this moment).

Services (``--backend``, default auto):
* redis: Redis as broker and result backend (``BENCH_REDIS_URL``, default redis://127.0.0.1:6379/13; this Redis
  database must be the benchmark's own: it is flushed before each run and at the end) and MariaDB as the
  database (``BENCH_FANOUT_DATABASE_URL``, default mysql://root@127.0.0.1:3306/statarb_bench_fanout; the
  benchmark's own database: dropped and created again at the start, dropped at the end);
* sqlite: the embedded default, everything in a temporary directory /tmp/statarb-fanout-<random>/: the database
  db.sqlite3, the kombu SQLAlchemy broker broker-<run>.sqlite3 and the result backend results-<run>.sqlite3
  (fresh broker and result files for every run, so nothing queued by one run reaches the next);
* auto: redis when both Redis and MariaDB answer, else sqlite (with a note).

Universe (about 400 symbols, ``--symbols``): the real hourly Binance candles in
../shared/data/binance-usdt-1h-2021, imported in place with ``candles_import_directory`` (126 files, 119 of them
have the 2,000 bars of history the window needs), plus derived symbols. Derived symbol ``<BASE>S<k*500>USDT`` is a
full-history real symbol shifted forward in time by k*500 hours: its candle at hour t is the real candle of hour
t - k*500 (k = 1, 2, 3, ..., every full-history symbol for k = 1 first, then k = 2, ...). Only its last 2,100 bars
are written. Each is a real price path of an earlier period on the current clock, so every derived series is
distinct from the real ones and from each other (a 500-hour shift of one symbol against itself is not the same
series). Strategy configuration: the defaults, lookback 2,000 bars, on the benchmark's exchange id ``benchfanout``.

Every run starts from no pairs (pairs and their tests are deleted before each run, outside the timing), so each run
creates the same candidates. Block size: STATARB_SCREEN_BLOCK_PAIRS (``--block-pairs``, default 10,000 directions).
Workers and the other child processes run with one BLAS thread (OPENBLAS/OMP/MKL_NUM_THREADS=1). Phases of the
fanned-out runs come from the worker's own log (INFO: task received / succeeded in N s).

The machine matters: with 2 cores a speed-up close to 2x is the best to expect, less by the serial parts (the
``screen_pairs`` task loading the window and dispatching the blocks, each worker process loading the window for
its first block, the merge with the out-of-sample confirmations and the writes) and by other load.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from _shared import DEFAULT_DATA_DIR, REPO_ROOT, mysql_problem, recreate_mysql_database  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_DATABASE_URL = "mysql://root@127.0.0.1:3306/statarb_bench_fanout"
EXCHANGE = "benchfanout"
TIMEFRAME = "1h"
HOUR_MS = 3_600_000
LOOKBACK_BARS = 2000
DERIVED_SHIFT_BARS = 500
DERIVED_KEEP_BARS = 2100
WORKER_READY_SECONDS = 90
RUN_TIMEOUT_SECONDS = 600


# --- child processes (Django set up from the environment the parent prepared) ----------------------------------


def django_setup(migrate: bool = False) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "statarb_site.settings.local"
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


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
    django_setup(migrate=True)
    migrate_seconds = time.perf_counter() - start
    from django.db import connection, transaction

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
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            database = f"MariaDB/MySQL {cursor.fetchone()[0]}"
    else:
        import sqlite3

        database = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL as in settings)"
    return {
        "database": database,
        "migrate_seconds": migrate_seconds,
        "real_files": len(summary.files),
        "real_rows": summary.rows,
        "real_in_window": n_real,
        "real_excluded": sorted(window.excluded),
        "import_seconds": import_seconds,
        "full_history_symbols": n_full,
        "derived": len(derived),
        "derived_rows": derived_rows,
        "derived_seconds": derived_seconds,
        "window_symbols": len(window.symbols),
        "directions": len(window.symbols) * (len(window.symbols) - 1),
    }


def reset_pairs() -> None:
    """Every run starts from no pairs (the benchmark's database holds nothing else)."""
    from pairs.models import Pair, PairTest

    PairTest.objects.all().delete()
    Pair.objects.all().delete()


def inprocess_child() -> dict:
    django_setup()
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
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def drive_child() -> dict:
    """Send screen_pairs to the running worker and wait for the run to succeed (the worker is up already)."""
    django_setup()
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


CEILING_PAIRS = 40_000


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


def machine_ceiling(env: dict, window_file: Path, directory: Path, processes: int) -> list[dict]:
    barrier = directory / f"barrier-{processes}"
    barrier.mkdir()
    children = []
    for k in range(processes):
        result_path = barrier / f"result-{k}.json"
        children.append((subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", "ceiling", "--result-file", str(result_path),
             "--window-file", str(window_file), "--barrier", str(barrier)], env=env, cwd=REPO_ROOT,
        ), result_path))
    deadline = time.monotonic() + 120
    while len(list(barrier.glob("ready-*"))) < processes and time.monotonic() < deadline:
        if any(child.poll() not in (None, 0) for child, _ in children):
            break
        time.sleep(0.01)
    (barrier / "go").touch()
    results = []
    for child, result_path in children:
        if child.wait() != 0:
            raise SystemExit(f"ceiling child failed (exit status {child.returncode})")
        results.append(json.loads(result_path.read_text()))
    return results


# --- the parent: services, workers, report ----------------------------------------------------------------------


def redis_ok(url: str) -> str | None:
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"Redis at {url} unreachable: {exc}"
    return None


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def run_child(mode: str, env: dict, extra: list[str] | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    try:
        completed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--result-file", str(result_path),
             *(extra or [])],
            env=env, cwd=REPO_ROOT, check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"{mode} step failed (exit status {completed.returncode})")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def celery_command() -> list[str]:
    script = Path(sys.executable).parent / "celery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


def start_worker(concurrency: int, env: dict, log_path: Path) -> subprocess.Popen:
    command = [*celery_command(), "-A", "statarb_site", "worker", "-Q", "selection,default",
               "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "INFO",
               "--hostname", f"benchfanout{concurrency}-{os.getpid()}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = log_path.open("w")
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    deadline = time.monotonic() + WORKER_READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"worker exited with status {process.returncode}; log {log_path}:\n"
                             + log_path.read_text()[-3000:])
        if " ready." in log_path.read_text():
            return process
        time.sleep(0.2)
    stop_worker(process)
    raise SystemExit(f"worker not ready after {WORKER_READY_SECONDS} s; log {log_path}")


def stop_worker(process: subprocess.Popen) -> None:
    """Cold shutdown of the worker we started (its own process group), then kill whatever is left of the group."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGQUIT)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


_LOG_LINE = re.compile(
    r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/[\w-]+\] Task (?P<task>[\w.]+)\[[^\]]+\] "
    r"(?P<what>received|succeeded in (?P<seconds>[\d.e-]+)s)"
)


def log_phases(log_path: Path) -> dict:
    """From the worker's log: when each task was received / succeeded, and how long each ran."""
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match:
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((at, match["task"].rsplit(".", 1)[-1], match["what"].split()[0],
                           float(match["seconds"]) if match["seconds"] else None))

    def times(task, what):
        return [e for e in events if e[1] == task and e[2] == what]

    blocks_done = times("screen_pairs_block", "succeeded")
    blocks_received = times("screen_pairs_block", "received")
    start_done = times("screen_pairs", "succeeded")
    merge_done = times("screen_pairs_merge", "succeeded")
    return {
        "blocks": len(blocks_done),
        "start_task": start_done[0][3] if start_done else None,
        "blocks_first_received": min(e[0] for e in blocks_received) if blocks_received else None,
        "blocks_last_done": max(e[0] for e in blocks_done) if blocks_done else None,
        "block_task_sum": sum(e[3] for e in blocks_done),
        "block_task_max": max((e[3] for e in blocks_done), default=0.0),
        "merge_task": merge_done[0][3] if merge_done else None,
    }


def machine_line() -> str:
    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}; load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--backend", choices=("auto", "redis", "sqlite"), default="auto")
    parser.add_argument("--symbols", type=int, default=400, help="universe size (real + derived)")
    parser.add_argument("--block-pairs", default="10000",
                        help="STATARB_SCREEN_BLOCK_PAIRS; comma-separated to compare several sizes")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, comma-separated")
    parser.add_argument("--no-inprocess", action="store_true", help="skip the in-process screening_run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (worker logs)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the 1-vs-2-process ceiling measurement")
    parser.add_argument("--child", choices=("setup", "inprocess", "drive", "ceiling"), help=argparse.SUPPRESS)
    parser.add_argument("--window-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()

    if args.child:
        if args.child == "setup":
            result = setup_child(data_dir, args.symbols)
        elif args.child == "ceiling":
            result = ceiling_child(args.window_file, args.barrier)
        elif args.child == "inprocess":
            result = inprocess_child()
        else:
            result = drive_child()
        args.result_file.write_text(json.dumps(result))
        return

    started = time.perf_counter()
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    block_sizes = [int(n) for n in args.block_pairs.split(",") if n.strip()]
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    database_url = os.environ.get("BENCH_FANOUT_DATABASE_URL", DEFAULT_DATABASE_URL)
    notes = []
    backend = args.backend
    if backend in ("auto", "redis"):
        problem = redis_ok(redis_url) or mysql_problem(recreate_mysql_database, database_url)
        if problem is None:
            backend = "redis"
        elif backend == "redis":
            raise SystemExit(f"bench_screen_fanout: {problem}")
        else:
            notes.append(f"Redis + MariaDB not used ({problem}): SQLite database, broker and result backend.")
            backend = "sqlite"

    directory = Path(tempfile.mkdtemp(prefix="statarb-fanout-", dir="/tmp"))
    base_env = dict(os.environ, DEBUG="0", SECRET_KEY="benchmark-only-" + "x" * 50, STATARB_VAR_DIR=str(directory),
                    STATARB_SCREEN_FANOUT="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                    LOG_LEVEL="WARNING", PYTHONPATH=str(REPO_ROOT), BENCH_WINDOW_FILE=str(directory / "window.npy"))
    base_env.pop("DJANGO_SETTINGS_MODULE", None)
    if backend == "redis":
        base_env.update(DATABASE_URL=database_url, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
        services = f"Redis broker and result backend ({redis_url}), MariaDB database ({database_url})"
    else:
        base_env["DATABASE_URL"] = f"sqlite:///{directory / 'db.sqlite3'}"
        services = (f"SQLite database, kombu SQLAlchemy broker and SQLAlchemy result backend (temporary files in "
                    f"{directory})")

    def run_env(label: str, block_pairs: int = block_sizes[0]) -> dict:
        env = dict(base_env, STATARB_SCREEN_BLOCK_PAIRS=str(block_pairs))
        if backend == "redis":
            redis_flush(redis_url)
        else:
            env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{directory / f'broker-{label}.sqlite3'}"
            env["CELERY_RESULT_BACKEND"] = f"db+sqlite:///{directory / f'results-{label}.sqlite3'}"
        return env

    print("# Screening fan-out benchmark (screen_pairs over Celery workers)\n")
    print(f"{machine_line()}\n")
    print(f"* services: {services}")
    for note in notes:
        print(f"* {note}")

    workers = []
    fanout = {}
    inprocess = None
    ceiling = None
    try:
        setup = run_child("setup", run_env("setup"), ["--data-dir", str(data_dir), "--symbols", str(args.symbols)])
        print(f"* database: {setup['database']}; migrate {setup['migrate_seconds']:.1f} s")
        print(f"* real symbols: {setup['real_files']} files, {setup['real_rows']:,} candles imported in "
              f"{setup['import_seconds']:.1f} s; {setup['real_in_window']} have {LOOKBACK_BARS:,} bars of history "
              f"(left out: {', '.join(setup['real_excluded']) or 'none'})")
        print(f"* derived symbols: {setup['derived']} (real full-history symbols, {setup['full_history_symbols']} of "
              f"them, shifted by k x {DERIVED_SHIFT_BARS} h), {setup['derived_rows']:,} candles written in "
              f"{setup['derived_seconds']:.1f} s")
        print(f"* universe in the window: {setup['window_symbols']} symbols, {setup['directions']:,} directions; "
              f"lookback {LOOKBACK_BARS:,} bars", flush=True)

        if not args.no_inprocess:
            inprocess = run_child("inprocess", run_env("inprocess"))
        if not args.no_ceiling:
            window_file = directory / "window.npy"
            ceiling = {n: machine_ceiling(base_env, window_file, directory, n) for n in (1, 2)}
        for block_pairs in block_sizes:
            for count in worker_counts:
                label = f"b{block_pairs}-w{count}"
                env = run_env(label, block_pairs)
                log_path = directory / f"worker-{label}.log"
                process = start_worker(count, env, log_path)
                workers.append(process)
                try:
                    result = run_child("drive", env)
                finally:
                    stop_worker(process)
                    workers.remove(process)
                result["log"] = log_phases(log_path)
                fanout[(block_pairs, count)] = result
    finally:
        for process in workers:
            stop_worker(process)
        if backend == "redis":
            redis_flush(redis_url)
            recreate_mysql_database(database_url, drop_only=True)
        if args.keep:
            print(f"* kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)

    print("\n## Time to a succeeded run\n")
    print("| workers | how | block size (directions) | blocks | seconds | speed-up vs 1 worker | tests | passed "
          "| candidates |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    if inprocess:
        print(f"| 1 (this process) | in-process `screening_run`, no Celery | 2,000 | {inprocess['blocks']} "
              f"| {inprocess['seconds']:.2f} | - | {inprocess['tests']:,} | {inprocess['passed']:,} "
              f"| {inprocess['candidates']:,} |")
    for (block_pairs, count), result in fanout.items():
        base = fanout.get((block_pairs, 1), {}).get("seconds")
        ratio = f"**{base / result['seconds']:.2f}x**" if base else "-"
        print(f"| {count} | Celery fan-out, `--concurrency {count}` | {block_pairs:,} | {result['log']['blocks']} "
              f"| {result['seconds']:.2f} | {ratio} | {result['tests']:,} | {result['passed']:,} "
              f"| {result['candidates']:,} |")
    if inprocess:
        print(f"\nIn-process `screening_run`: {inprocess['seconds']:.2f} s wall, {inprocess['cpu_seconds']:.2f} s CPU, "
              f"process peak RSS {inprocess['peak_rss_mib']:,.0f} MiB. "
              f"For reference, one `screen()` call over all {inprocess['one_call_tests']:,} directions of the same "
              f"window (no blocks, no database, no finish): {inprocess['one_call_seconds']:.2f} s.")

    if ceiling:
        one = ceiling[1][0]["seconds"]
        two = max(r["seconds"] for r in ceiling[2])
        walls = " and ".join(f"{r['seconds']:.2f} s" for r in ceiling[2])
        cpus = " and ".join(f"{r['cpu_seconds']:.2f} s" for r in ceiling[2])
        print(f"\nThe machine's ceiling, measured just before the workers ran: `screen()` on {CEILING_PAIRS:,} "
              f"directions of this window took {one:.2f} s in one process alone, and {walls} (CPU {cpus}) in two "
              f"processes started together: two processes do **{2 * one / two:.2f}x** the work of one in the same "
              "time. That is the most the fan-out can gain from a second worker process now.")

    print("\n## Where the fanned-out time goes (from the worker log)\n")
    print("| workers | block size | screen_pairs task: window + dispatch (s) | blocks: first received to last done (s) "
          "| block tasks, sum of run times (s) | longest block task (s) | merge task (s) | rest: queueing, "
          "chord, polling (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (block_pairs, count), result in fanout.items():
        log = result["log"]
        span = (log["blocks_last_done"] - log["blocks_first_received"]
                if log["blocks_first_received"] is not None else float("nan"))
        start_task = log["start_task"] or 0.0
        merge = log["merge_task"] or 0.0
        rest = result["seconds"] - start_task - span - merge
        print(f"| {count} | {block_pairs:,} | {start_task:.2f} | {span:.2f} | {log['block_task_sum']:.2f} "
              f"| {log['block_task_max']:.2f} | {merge:.2f} | {rest:.2f} |")
    print("\nThe merge task's time runs until it returns, a moment after the run is marked succeeded, so 'rest' "
          "(total minus the three phases) can come out slightly low.")
    for block_pairs in block_sizes:
        if (block_pairs, 1) in fanout and (block_pairs, 2) in fanout:
            ratio = fanout[(block_pairs, 1)]["seconds"] / fanout[(block_pairs, 2)]["seconds"]
            print(f"\nFan-out speed-up with 2 worker processes vs 1 (blocks of {block_pairs:,}): **{ratio:.2f}x** "
                  f"({os.cpu_count()} CPUs: at most about 2x).")
    print(f"\nWhole benchmark: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
