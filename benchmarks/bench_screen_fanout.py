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
t - k*500 (k = 1, 2, 3, ..., every full-history symbol for k = 1 first, then k = 2, ...). Only its last 2,600
bars are written (lookback + validation_bars + 100: the formation window ends 500 bars before the newest). Each is
a real price path of an earlier period on the current clock, so every derived series is distinct from the real ones
and from each other (a 500-hour shift of one symbol against itself is not the same series). Strategy
configuration: the defaults, lookback 2,000 bars, on the benchmark's exchange id ``benchfanout``.

Every run starts from no pairs (pairs and their tests are deleted before each run, outside the timing), so each run
creates the same candidates. Block size: STATARB_SCREEN_BLOCK_PAIRS (``--block-pairs``, default 10,000 directions).
Workers and the other child processes run with one BLAS thread (OPENBLAS/OMP/MKL_NUM_THREADS=1). Phases of the
fanned-out runs come from the worker's own log (INFO: task received / succeeded in N s).

The machine matters: with 2 cores a speed-up close to 2x is the best to expect, less by the serial parts (the
``screen_pairs`` task loading the window and dispatching the blocks, the merge with the out-of-sample
confirmations and the writes; each worker process takes the window the dispatching task left in Redis, and the
blocks' results go to Redis with only their keys through the chord: ``pairs.services.fanout``) and by other load.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from _fanout_children import (  # noqa: E402
    CEILING_PAIRS,
    DERIVED_SHIFT_BARS,
    LOOKBACK_BARS,
    ceiling_child,
    drive_child,
    inprocess_child,
    setup_child,
)
from _shared import (  # noqa: E402
    DEFAULT_DATA_DIR,
    REPO_ROOT,
    load_average,
    machine_description,
    mysql_problem,
    print_row,
    print_table_head,
    recreate_mysql_database,
    run_json_child,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_DATABASE_URL = "mysql://root@127.0.0.1:3306/statarb_bench_fanout"
WORKER_READY_SECONDS = 90


# --- the parent: services, workers, report ----------------------------------------------------------------------


def child_command(mode: str, *extra: str) -> list[str]:
    """This script again as a ``--child`` step: a fresh process that sets Django up from the environment it gets."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", mode, *extra]


def run_child(mode: str, env: dict, extra: list[str] | None = None) -> dict:
    """One child step run to its end, its result (a failed step stops the benchmark)."""
    return run_json_child(child_command(mode, *(extra or [])), what=f"{mode} step", env=env, cwd=REPO_ROOT)


def machine_ceiling(env: dict, window_file: Path, directory: Path, processes: int) -> list[dict]:
    """``processes`` ceiling children, released together once all are warmed up (or one failed, or 120 s)."""
    barrier = directory / f"barrier-{processes}"
    barrier.mkdir()
    children = []
    for k in range(processes):
        result_path = barrier / f"result-{k}.json"
        command = child_command("ceiling", "--result-file", str(result_path), "--window-file", str(window_file),
                                "--barrier", str(barrier))
        children.append((subprocess.Popen(command, env=env, cwd=REPO_ROOT), result_path))
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


# Celery's own format ("[2021-... 12:00:00,123: INFO/MainProcess] Task ...") or Django's LOGGING, which workers use
# since the Celery app hands logging back to Django ("2021-... 12:00:00,123 INFO celery.app.trace: Task ...").
_LOG_LINE = re.compile(
    r"^\[?(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})(?::| \w+ [\w.]+:| \w+/[\w-]+\]).*?"
    r" ?Task (?P<task>[\w.]+)\[(?P<id>[^\]]+)\] (?P<what>received|ignored|succeeded in (?P<seconds>[\d.e-]+)s)"
)


def log_phases(log_path: Path) -> dict:
    """From the worker's log: when each task was received / succeeded, and how long each ran."""
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match:
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((at, match["task"].rsplit(".", 1)[-1], match["what"].split()[0],
                           float(match["seconds"]) if match["seconds"] else None, match["id"]))

    def times(task, what):
        return [e for e in events if e[1] == task and e[2] == what]

    blocks_done = times("screen_pairs_block", "succeeded")
    blocks_received = times("screen_pairs_block", "received")
    # The dispatching task replaces itself with the chord (``self.replace``): Celery logs it "ignored", without a
    # run time, so its time is from its "received" line to that one.
    start_received = {e[4]: e[0] for e in times("screen_pairs", "received")}
    start_times = [e[3] if e[3] is not None else e[0] - start_received.get(e[4], e[0])
                   for e in times("screen_pairs", "succeeded") + times("screen_pairs", "ignored")]
    merge_done = times("screen_pairs_merge", "succeeded")
    return {
        "blocks": len(blocks_done),
        "start_task": start_times[0] if start_times else None,
        "blocks_first_received": min(e[0] for e in blocks_received) if blocks_received else None,
        "blocks_last_done": max(e[0] for e in blocks_done) if blocks_done else None,
        "block_task_sum": sum(e[3] for e in blocks_done),
        "block_task_max": max((e[3] for e in blocks_done), default=0.0),
        "merge_task": merge_done[0][3] if merge_done else None,
    }


def parse_args() -> argparse.Namespace:
    """The command line; the hidden options are for the script's own child steps (``--child``)."""
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
    return parser.parse_args()


def run_as_child(args: argparse.Namespace) -> None:
    """One child step (set-up, in-process run, driving a fanned-out run, a ceiling process), its result as JSON."""
    steps = {"setup": lambda: setup_child(args.data_dir.resolve(), args.symbols),
             "ceiling": lambda: ceiling_child(args.window_file, args.barrier),
             "inprocess": inprocess_child, "drive": drive_child}
    args.result_file.write_text(json.dumps(steps[args.child]()))


def choose_backend(requested: str, redis_url: str, database_url: str) -> tuple[str, list[str]]:
    """(backend, notes): redis when Redis answers and the MariaDB database could be made afresh, else (with auto)
    sqlite and a note why."""
    if requested not in ("auto", "redis"):
        return requested, []
    problem = redis_ok(redis_url) or mysql_problem(recreate_mysql_database, database_url)
    if problem is None:
        return "redis", []
    if requested == "redis":
        raise SystemExit(f"bench_screen_fanout: {problem}")
    return "sqlite", [f"Redis + MariaDB not used ({problem}): SQLite database, broker and result backend."]


class Services:
    """The database, broker and result backend of the runs, and the environment every child process starts from
    (one BLAS thread, fan-out on, INFO logging: the worker's task lines are parsed, the temporary directory)."""

    def __init__(self, backend: str, redis_url: str, database_url: str, directory: Path):
        self.backend, self.redis_url, self.database_url, self.directory = backend, redis_url, database_url, directory
        self.base_env = dict(os.environ, DEBUG="0", SECRET_KEY="benchmark-only-" + "x" * 50,
                             STATARB_VAR_DIR=str(directory), STATARB_SCREEN_FANOUT="1", OPENBLAS_NUM_THREADS="1",
                             OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LOG_LEVEL="INFO",
                             PYTHONPATH=str(REPO_ROOT), BENCH_WINDOW_FILE=str(directory / "window.npy"))
        self.base_env.pop("DJANGO_SETTINGS_MODULE", None)
        if backend == "redis":
            self.base_env.update(DATABASE_URL=database_url, CELERY_BROKER_URL=redis_url,
                                 CELERY_RESULT_BACKEND=redis_url)
            self.description = f"Redis broker and result backend ({redis_url}), MariaDB database ({database_url})"
        else:
            self.base_env["DATABASE_URL"] = f"sqlite:///{directory / 'db.sqlite3'}"
            self.description = (f"SQLite database, kombu SQLAlchemy broker and SQLAlchemy result backend (temporary "
                                f"files in {directory})")

    def env(self, label: str, block_pairs: int) -> dict:
        """The environment of one step: Redis flushed, or a fresh SQLite broker and result file of its own, so
        nothing queued by one run reaches the next."""
        env = dict(self.base_env, STATARB_SCREEN_BLOCK_PAIRS=str(block_pairs))
        if self.backend == "redis":
            redis_flush(self.redis_url)
        else:
            env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{self.directory / f'broker-{label}.sqlite3'}"
            env["CELERY_RESULT_BACKEND"] = f"db+sqlite:///{self.directory / f'results-{label}.sqlite3'}"
        return env

    def close(self, keep: bool) -> None:
        """Leave nothing of the benchmark behind: its Redis database flushed, its MariaDB database dropped, the
        temporary directory removed (unless ``keep``, for the worker logs)."""
        if self.backend == "redis":
            redis_flush(self.redis_url)
            recreate_mysql_database(self.database_url, drop_only=True)
        if keep:
            print(f"* kept {self.directory}")
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


def print_setup(setup: dict) -> None:
    """What the set-up child built: the database, the real and derived symbols, the universe the window keeps."""
    print(f"* database: {setup['database']}; migrate {setup['migrate_seconds']:.1f} s")
    print(f"* real symbols: {setup['real_files']} files, {setup['real_rows']:,} candles imported in "
          f"{setup['import_seconds']:.1f} s; {setup['real_in_window']} have {LOOKBACK_BARS:,} bars of history "
          f"(left out: {', '.join(setup['real_excluded']) or 'none'})")
    print(f"* derived symbols: {setup['derived']} (real full-history symbols, {setup['full_history_symbols']} of "
          f"them, shifted by k x {DERIVED_SHIFT_BARS} h), {setup['derived_rows']:,} candles written in "
          f"{setup['derived_seconds']:.1f} s")
    print(f"* universe in the window: {setup['window_symbols']} symbols, {setup['directions']:,} directions; "
          f"lookback {LOOKBACK_BARS:,} bars", flush=True)


def fanned_out_run(services: Services, block_pairs: int, count: int) -> dict:
    """One fanned-out run on a worker of its own with ``count`` processes (stopped afterwards, also when the run
    fails), with the phases read from that worker's log."""
    label = f"b{block_pairs}-w{count}"
    env = services.env(label, block_pairs)
    log_path = services.directory / f"worker-{label}.log"
    process = start_worker(count, env, log_path)
    try:
        result = run_child("drive", env)
    finally:
        stop_worker(process)
    result["log"] = log_phases(log_path)
    return result


def measure(args, services: Services, block_sizes: list[int], worker_counts: list[int]):
    """Set up the universe, then (inprocess, ceiling, fanout): the in-process run, the machine's ceiling (both
    None when skipped) and the fanned-out runs by (block size, worker processes)."""
    setup = run_child("setup", services.env("setup", block_sizes[0]),
                      ["--data-dir", str(args.data_dir.resolve()), "--symbols", str(args.symbols)])
    print_setup(setup)
    inprocess = None if args.no_inprocess else run_child("inprocess", services.env("inprocess", block_sizes[0]))
    ceiling = None
    if not args.no_ceiling:
        window_file = services.directory / "window.npy"
        ceiling = {n: machine_ceiling(services.base_env, window_file, services.directory, n) for n in (1, 2)}
    fanout = {(block_pairs, count): fanned_out_run(services, block_pairs, count)
              for block_pairs in block_sizes for count in worker_counts}
    return inprocess, ceiling, fanout


def print_times(inprocess: dict | None, fanout: dict) -> None:
    """Time to a succeeded run: the in-process reference, then each fanned-out run with its speed-up over one worker
    process at the same block size."""
    print("\n## Time to a succeeded run\n")
    print_table_head(["workers", "how", "block size (directions)", "blocks", "seconds", "speed-up vs 1 worker",
                      "tests", "passed", "candidates"], "rlrrrrrrr")
    if inprocess:
        print_row("1 (this process)", "in-process `screening_run`, no Celery", "2,000", inprocess["blocks"],
                  f"{inprocess['seconds']:.2f}", "-", f"{inprocess['tests']:,}", f"{inprocess['passed']:,}",
                  f"{inprocess['candidates']:,}")
    for (block_pairs, count), result in fanout.items():
        base = fanout.get((block_pairs, 1), {}).get("seconds")
        ratio = f"**{base / result['seconds']:.2f}x**" if base else "-"
        print_row(count, f"Celery fan-out, `--concurrency {count}`", f"{block_pairs:,}", result["log"]["blocks"],
                  f"{result['seconds']:.2f}", ratio, f"{result['tests']:,}", f"{result['passed']:,}",
                  f"{result['candidates']:,}")
    if inprocess:
        print(f"\nIn-process `screening_run`: {inprocess['seconds']:.2f} s wall, {inprocess['cpu_seconds']:.2f} s CPU, "
              f"process peak RSS {inprocess['peak_rss_mib']:,.0f} MiB. "
              f"For reference, one `screen()` call over all {inprocess['one_call_tests']:,} directions of the same "
              f"window (no blocks, no database, no finish): {inprocess['one_call_seconds']:.2f} s.")


def print_ceiling(ceiling: dict | None) -> None:
    """How much a second process adds on this machine now: the most the fan-out can gain from a second worker."""
    if not ceiling:
        return
    one = ceiling[1][0]["seconds"]
    two = max(r["seconds"] for r in ceiling[2])
    walls = " and ".join(f"{r['seconds']:.2f} s" for r in ceiling[2])
    cpus = " and ".join(f"{r['cpu_seconds']:.2f} s" for r in ceiling[2])
    print(f"\nThe machine's ceiling, measured just before the workers ran: `screen()` on {CEILING_PAIRS:,} "
          f"directions of this window took {one:.2f} s in one process alone, and {walls} (CPU {cpus}) in two "
          f"processes started together: two processes do **{2 * one / two:.2f}x** the work of one in the same "
          "time. That is the most the fan-out can gain from a second worker process now.")


def print_phases(fanout: dict, block_sizes: list[int]) -> None:
    """Where each fanned-out run's time went (from its worker's log), and the 2-vs-1 speed-up per block size."""
    print("\n## Where the fanned-out time goes (from the worker log)\n")
    print_table_head(["workers", "block size", "screen_pairs task: window + dispatch (s)",
                      "blocks: first received to last done (s)", "block tasks, sum of run times (s)",
                      "longest block task (s)", "merge task (s)", "rest: queueing, chord, polling (s)"], "rrrrrrrr")
    for (block_pairs, count), result in fanout.items():
        log = result["log"]
        span = (log["blocks_last_done"] - log["blocks_first_received"]
                if log["blocks_first_received"] is not None else float("nan"))
        start_task = log["start_task"] or 0.0
        merge = log["merge_task"] or 0.0
        rest = result["seconds"] - start_task - span - merge
        print_row(count, f"{block_pairs:,}", f"{start_task:.2f}", f"{span:.2f}", f"{log['block_task_sum']:.2f}",
                  f"{log['block_task_max']:.2f}", f"{merge:.2f}", f"{rest:.2f}")
    print("\nThe merge task's time runs until it returns, a moment after the run is marked succeeded, so 'rest' "
          "(total minus the three phases) can come out slightly low.")
    for block_pairs in block_sizes:
        if (block_pairs, 1) in fanout and (block_pairs, 2) in fanout:
            ratio = fanout[(block_pairs, 1)]["seconds"] / fanout[(block_pairs, 2)]["seconds"]
            print(f"\nFan-out speed-up with 2 worker processes vs 1 (blocks of {block_pairs:,}): **{ratio:.2f}x** "
                  f"({os.cpu_count()} CPUs: at most about 2x).")


def main() -> None:
    args = parse_args()
    if args.child:
        run_as_child(args)
        return
    started = time.perf_counter()
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    block_sizes = [int(n) for n in args.block_pairs.split(",") if n.strip()]
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    database_url = os.environ.get("BENCH_FANOUT_DATABASE_URL", DEFAULT_DATABASE_URL)
    backend, notes = choose_backend(args.backend, redis_url, database_url)
    directory = Path(tempfile.mkdtemp(prefix="statarb-fanout-", dir="/tmp"))
    services = Services(backend, redis_url, database_url, directory)

    print("# Screening fan-out benchmark (screen_pairs over Celery workers)\n")
    print(f"{machine_description()}; load average {load_average()}\n")
    print(f"* services: {services.description}")
    for note in notes:
        print(f"* {note}")
    try:
        inprocess, ceiling, fanout = measure(args, services, block_sizes, worker_counts)
    finally:
        services.close(args.keep)

    print_times(inprocess, fanout)
    print_ceiling(ceiling)
    print_phases(fanout, block_sizes)
    print(f"\nWhole benchmark: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
