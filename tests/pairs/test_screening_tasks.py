"""The screen_pairs task: in one process, and fanned out as a chord over a REAL Celery worker process.

The fan-out test starts `celery worker` on the selection queue against the test database (like
tests/statarb_site/test_celery_worker.py). The chord's block and merge tasks are routed to "selection" by
CELERY_TASK_ROUTES, so the worker consumes that queue: on Redis the queue is purged first; on the embedded
SQLite transport the worker gets a broker file of its own (a demo stack on the default broker file also
consumes "selection" and would take the blocks). Its result backend is the configured one (Redis, or the
db+sqlite file), which is what the chord's counting runs on.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings

from pairs.models import CointegrationRun, Level, LevelChange, Pair, PairTest, StrategyConfig
from pairs.quant.screening import split_pairs
from pairs.services.fanout import run_token
from pairs.services.screening import ENTRY_LEVEL_NUMBER, screening_run, screening_run_start
from pairs.tasks import screen_pairs, screen_pairs_failed, screening_chord
from statarb_site.celery import app
from tests.conftest import REPO_ROOT
from tests.live_server import session_database_url
from tests.pairs.services.test_screening import FORMATION_END, import_real

WORKER_START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 90
LOOKBACK = 1000
# Candidates among them on the 1000-bar formation window ending 500 bars before the newest bar (LINK~SKL, NKN~ZEN).
WORKER_SYMBOLS = ["BTCUSDT", "ETHUSDT", "LINKUSDT", "NKNUSDT", "SKLUSDT", "ZENUSDT"]
BLOCK_PAIRS = 8  # 30 directions -> 6 blocks: 3 symbol groups, 3 blocks within one and 3 between two


@pytest.mark.django_db
def test_on_the_stored_clock_the_screen_reads_no_bar_after_it(shared_candles_dir, settings):
    """The demo's stored-data clock stands 48 bars before the newest stored bar: those bars are its future, so the
    screening ends where the clock stands, as a live screening would have then."""
    from core.market_clock import stored_clock_start
    from tests.pairs.services.test_screening import LAST_BAR

    settings.STATARB_SCREEN_FANOUT = False
    settings.STATARB_MARKET_CLOCK = "stored"
    import_real(shared_candles_dir, ["ONEUSDT", "OXTUSDT", "VETUSDT"])
    stored_clock_start(start=LAST_BAR - timedelta(hours=47), end=LAST_BAR + timedelta(hours=1),
                       bar=timedelta(hours=1), wall_seconds=1)

    screen_pairs(lookback_bars=500)

    run = CointegrationRun.objects.get()
    assert run.window_end == FORMATION_END - timedelta(hours=48)
    assert run.parameters["validation_end"] == (LAST_BAR - timedelta(hours=48)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.django_db
def test_screen_pairs_without_fanout_runs_in_the_task(shared_candles_dir, settings):
    settings.STATARB_SCREEN_FANOUT = False
    import_real(shared_candles_dir, ["ONEUSDT", "OXTUSDT", "VETUSDT"])

    summary = screen_pairs(lookback_bars=500)

    run = CointegrationRun.objects.get()
    assert summary == {"run_id": run.pk, "n_tests": 6, "n_candidates": run.n_candidates}
    assert run.status == CointegrationRun.Status.SUCCEEDED
    assert run.n_symbols == 3 and run.n_tests == 6 and run.lookback_bars == 500
    assert run.window_end == FORMATION_END and run.window_start == FORMATION_END - timedelta(hours=499)
    assert run.duration_seconds is not None
    assert Pair.objects.count() == run.n_candidates
    assert PairTest.objects.filter(run=run).count() == run.n_candidates


def _purge(broker_url: str, queue: str) -> None:
    with app.connection_for_write(broker_url) as connection:
        connection.default_channel.queue_purge(queue)


@pytest.fixture
def selection_worker(tmp_path):
    """A `celery worker` process on the selection queue with fan-out on; yields (broker URL, output lines)."""
    if settings.BROKER_IS_REDIS:
        broker_url = settings.CELERY_BROKER_URL
    else:
        broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    _purge(broker_url, "selection")
    with _selection_worker_process(broker_url, settings.CELERY_RESULT_BACKEND, "screen") as output:
        yield broker_url, output


@contextlib.contextmanager
def _selection_worker_process(broker_url: str, result_backend: str, name: str, block_pairs: int = BLOCK_PAIRS):
    """A `celery worker` process (solo pool) on the selection queue of ``broker_url``, with fan-out on, on this
    session's test database; yields the list its output lines are added to."""
    env = {**os.environ, "DATABASE_URL": session_database_url(), "CELERY_BROKER_URL": broker_url,
           "CELERY_RESULT_BACKEND": result_backend, "CELERY_TASK_ALWAYS_EAGER": "0",
           "STATARB_SCREEN_FANOUT": "1", "STATARB_SCREEN_BLOCK_PAIRS": str(block_pairs),
           # One BLAS thread: the worker shares the machine with this test process.
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "celery", "-A", "statarb_site", "worker", "--pool", "solo", "-Q", "selection",
               "--hostname", f"{hostname}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "info"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading so a full pipe never blocks the worker
        for line in process.stdout:
            output.append(line)
            if " ready." in line:
                ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not ready.is_set() and process.poll() is None and time.monotonic() < deadline:
            ready.wait(0.2)
        if not ready.is_set():
            pytest.fail("celery worker did not start:\n" + "".join(output))
        yield output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)


TASK_LINE = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] (received|succeeded|raised|failed)")


def _wait_until_idle(*outputs: list[str], after: str, timeout: float, quiet: float = 2.0) -> None:
    """Wait until a task named ``after`` has finished, then until every task the workers (their ``outputs``)
    received has finished and nothing new arrived for ``quiet`` seconds (the merge sends the statistics-and-levels
    task on)."""
    deadline = time.monotonic() + timeout
    seen, last_change = 0, time.monotonic()
    while time.monotonic() < deadline:
        events = [m.groups() for output in outputs for m in map(TASK_LINE.search, list(output)) if m]
        received = {task_id for _, task_id, what in events if what == "received"}
        finished = {task_id for _, task_id, what in events if what != "received"}
        if len(events) != seen:
            seen, last_change = len(events), time.monotonic()
        after_done = any(name == after and what != "received" for name, _, what in events)
        if after_done and received <= finished and time.monotonic() - last_change >= quiet:
            return
        time.sleep(0.2)
    pytest.fail(f"the workers did not become idle after {after}:\n" + "".join(outputs[0][-60:]))


def _pair_snapshot() -> dict[tuple[str, str], dict]:
    return {
        (row.pop("y_instrument__symbol"), row.pop("x_instrument__symbol")): row
        for row in Pair.objects.values("pk", "y_instrument__symbol", "x_instrument__symbol", "pvalue", "qvalue",
                                       "hedge_ratio", "intercept", "adf_stat", "adf_lag", "half_life_bars", "hurst",
                                       "mean_crossings", "spread_std", "screening_zscore", "return_correlation",
                                       "johansen_passed", "level_id", "status", "consecutive_failures")
    }


def _tests_of(run: CointegrationRun) -> dict[tuple[str, str], dict]:
    return {
        (row.pop("pair__y_instrument__symbol"), row.pop("pair__x_instrument__symbol")): row
        for row in PairTest.objects.filter(run=run).values(
            "pair__y_instrument__symbol", "pair__x_instrument__symbol", "pvalue", "qvalue", "hedge_ratio",
            "adf_stat", "adf_lag", "half_life_bars", "hurst", "passed", "confirmed_out_of_sample", "johansen_passed")
    }


def _assert_rows_equal(got: dict, expected: dict, where) -> None:
    assert set(got) == set(expected), where
    for name, value in expected.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-15), (where, name)
        else:
            assert got[name] == value, (where, name)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_fanned_out_screen_in_a_real_worker_equals_the_in_process_run(shared_candles_dir, settings,
                                                                     selection_worker):
    broker_url, worker_output = selection_worker
    settings.STATARB_SCREEN_FANOUT = True
    settings.STATARB_SCREEN_BLOCK_PAIRS = BLOCK_PAIRS
    import_real(shared_candles_dir, WORKER_SYMBOLS)
    n = len(WORKER_SYMBOLS)

    with app.connection_for_write(broker_url) as connection:
        result = screen_pairs.apply_async(kwargs={"lookback_bars": LOOKBACK}, queue="selection",
                                          connection=connection)
    # The task replaces itself with the chord: its result is the merge's, once the merged run is written.
    started = result.get(timeout=RUN_TIMEOUT_S)
    assert set(started) == {"run_id", "n_tests", "n_candidates"}, started

    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = CointegrationRun.Status.RUNNING
    while time.monotonic() < deadline:
        status = CointegrationRun.objects.filter(pk=started["run_id"]).values_list("status", flat=True).get()
        if status != CointegrationRun.Status.RUNNING:
            break
        time.sleep(0.5)
    fanned = CointegrationRun.objects.get(pk=started["run_id"])
    assert status == CointegrationRun.Status.SUCCEEDED, (fanned.error, "".join(worker_output[-60:]))
    _wait_until_idle(worker_output, after="pairs.tasks.screen_pairs_merge", timeout=RUN_TIMEOUT_S)
    fanned.refresh_from_db()
    assert fanned.n_symbols == n
    assert fanned.n_tests == n * (n - 1)
    assert fanned.window_end == FORMATION_END and fanned.window_start == FORMATION_END - timedelta(hours=LOOKBACK - 1)
    assert fanned.duration_seconds is not None and fanned.duration_seconds > 0
    log = "".join(worker_output)
    # really fanned out, in several blocks
    assert len(re.findall(r"pairs\.tasks\.screen_pairs_block\[[0-9a-f-]+\] succeeded", log)) == 6
    assert "pairs.tasks.screen_pairs_merge[" in log
    assert not re.search(r"Task [\w.]+\[[0-9a-f-]+\] (raised|failed)", log), log
    _assert_results_travelled_as_the_backend_allows(log, fanned.pk, n_blocks=6)
    if settings.CELERY_RESULT_BACKEND.startswith("db+"):
        # The database result backend has no native chords: Celery polls the header with celery.chord_unlock
        # (routed like the merge task, so to the selection queue this worker consumes).
        assert "celery.chord_unlock[" in log
    _assert_equals_the_in_process_run(fanned)


# 30 directions -> 8 blocks for two workers: 4 symbol groups (2, 2, 1 and 1 symbols), 2 blocks within a group (a
# group of one symbol has no pair within) and 6 between two
TWO_WORKER_BLOCK_PAIRS = 4


@pytest.fixture
def redis_broker(request) -> tuple[str, str]:
    """(broker, result backend) on Redis: the session's when it runs on Redis, else the dedicated Redis db of
    ``cluster_services`` (the test then skips when Redis is not reachable, and fails with CI=true)."""
    if settings.BROKER_IS_REDIS:
        return settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND
    _, broker_url = request.getfixturevalue("cluster_services")
    return broker_url, broker_url


@pytest.mark.worker
@pytest.mark.services
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_selection_workers_over_redis_share_the_blocks_and_the_merged_run_equals_the_in_process_run(
        shared_candles_dir, settings, redis_broker):
    """Two worker processes on the selection queue of one Redis, as on two machines: both take blocks of the chord,
    one merges, and the merged run equals the single-process run."""
    broker_url, result_backend = redis_broker
    _purge(broker_url, "selection")
    import_real(shared_candles_dir, WORKER_SYMBOLS)

    with _selection_worker_process(broker_url, result_backend, "machine-a", TWO_WORKER_BLOCK_PAIRS) as first, \
            _selection_worker_process(broker_url, result_backend, "machine-b", TWO_WORKER_BLOCK_PAIRS) as second:
        with app.connection_for_write(broker_url) as connection:
            screen_pairs.apply_async(kwargs={"lookback_bars": LOOKBACK}, queue="selection", connection=connection)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and not CointegrationRun.objects.exclude(
                status=CointegrationRun.Status.RUNNING).exists():
            time.sleep(0.5)
        _wait_until_idle(first, second, after="pairs.tasks.screen_pairs_merge", timeout=RUN_TIMEOUT_S)
    fanned = CointegrationRun.objects.get()
    logs = ["".join(first), "".join(second)]
    assert fanned.status == CointegrationRun.Status.SUCCEEDED, (fanned.error, logs)
    blocks = [len(re.findall(r"pairs\.tasks\.screen_pairs_block\[[0-9a-f-]+\] succeeded", log)) for log in logs]
    assert all(taken >= 1 for taken in blocks), blocks  # both machines took blocks
    n = len(WORKER_SYMBOLS)
    assert sum(blocks) == len(split_pairs(n, math.ceil(n * (n - 1) / TWO_WORKER_BLOCK_PAIRS))) == 8, blocks
    assert sum("pairs.tasks.screen_pairs_merge[" in log for log in logs) == 1  # one of them merged, once
    for log in logs:
        assert not re.search(r"Task [\w.]+\[[0-9a-f-]+\] (raised|failed)", log), log
    assert (fanned.n_symbols, fanned.n_tests) == (n, n * (n - 1))
    _assert_results_travelled_as_the_backend_allows("".join(logs), fanned.pk, n_blocks=8, redis_url=result_backend)
    _assert_equals_the_in_process_run(fanned)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_block_that_fails_marks_the_run_failed_with_its_error(shared_candles_dir, settings, selection_worker):
    """The chord's error callback (``screen_pairs_failed``): without it a failed block left the run "running" for
    good. Sent from this process, so on the session's own Redis broker only (the embedded leg's worker listens on a
    broker file of its own, where a chord can't be sent from here)."""
    if not settings.BROKER_IS_REDIS:
        pytest.skip("the chord is sent on the session's broker: Redis only (the MariaDB + Redis leg of CI)")
    _, worker_output = selection_worker
    import_real(shared_candles_dir, WORKER_SYMBOLS[:3])
    run, _ = screening_run_start(config=StrategyConfig.current(), lookback_bars=LOOKBACK)

    # A tile of 99 groups doesn't fit a window of 3 symbols: that block raises, the other one succeeds.
    screening_chord(run, run_token(), [[1, 0, 0], [99, 0, 0]]).apply_async()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status != CointegrationRun.Status.RUNNING:
            break
        time.sleep(0.2)
    assert run.status == CointegrationRun.Status.FAILED, "".join(worker_output[-40:])
    assert "tile [99, 0, 0] doesn't fit the window of 3 symbols" in run.error, run.error
    assert run.finished_at is not None
    assert not PairTest.objects.filter(run=run).exists()


@pytest.mark.django_db
def test_the_error_callback_keeps_a_failure_already_recorded():
    run = CointegrationRun.objects.create(exchange="bybit", timeframe="1h", lookback_bars=100,
                                          status=CointegrationRun.Status.FAILED, error="FanoutStoreError: gone")
    screen_pairs_failed(None, RuntimeError("chord failed"), None, run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, run.error) == (CointegrationRun.Status.FAILED, "FanoutStoreError: gone")
    run.status = CointegrationRun.Status.RUNNING
    run.save(update_fields=["status"])
    screen_pairs_failed(None, RuntimeError("chord failed"), None, run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, run.error) == (CointegrationRun.Status.FAILED, "RuntimeError: chord failed")


def _assert_results_travelled_as_the_backend_allows(log: str, run_id: int, *, n_blocks: int,
                                                   redis_url: str | None = None) -> None:
    """On Redis each block returned a reference to its stored result (``pairs.services.fanout``) and the merge
    deleted them with the shared window; on the database backend the results travelled in the messages."""
    redis_url = redis_url or settings.CELERY_RESULT_BACKEND
    references = re.findall(rf"succeeded in [\d.e-]+s: {{'stored': 'statarb:screening:{run_id}:\w+:block:\d+'}}",
                            log)
    if not redis_url.startswith("redis://"):
        assert not references
        return
    import redis

    assert len(references) == n_blocks, log
    assert not redis.Redis.from_url(redis_url).keys(f"statarb:screening:{run_id}:*")


def _assert_equals_the_in_process_run(fanned: CointegrationRun) -> None:
    """The fanned-out run's tests, pairs and levels equal a screen of the same data and window in this process."""
    fanned_pairs = _pair_snapshot()
    fanned_tests = _tests_of(fanned)
    # (at least 2: one direction per unordered pair can be a candidate)
    assert len(fanned_pairs) == fanned.n_candidates >= 2
    assert set(fanned_tests) == set(fanned_pairs)
    entry = Level.objects.filter(number=ENTRY_LEVEL_NUMBER).first()
    assert entry is not None  # seeded by the data migration (restored by serialized_rollback)
    for key, row in fanned_pairs.items():
        # New pairs start on the entry level; any other level is grading's audited move from it.
        moves = list(LevelChange.objects.filter(pair_id=row["pk"]).order_by("pk").values_list("from_level_id",
                                                                                                "to_level_id"))
        if row["level_id"] != entry.pk:
            assert moves and moves[0][0] == entry.pk and moves[-1][1] == row["level_id"], key

    # The same screen in this process, on the same data and window. In one process: this test process is a Celery
    # client with a live Redis result subscription (result.get above), and a child forked now runs Celery's
    # after-fork hooks on the inherited sockets (seen hanging in recv in CI). The results are bit-identical whatever
    # the number of processes (pairs.quant.forked); the forked screen itself is tested in tests/pairs/quant.
    with override_settings(STATARB_SCREEN_PROCESSES=1):
        outcome = screening_run(config=StrategyConfig.current(), lookback_bars=LOOKBACK)

    local = outcome.run
    assert (local.n_symbols, local.n_tests, local.n_passed, local.n_candidates) == (
        fanned.n_symbols, fanned.n_tests, fanned.n_passed, fanned.n_candidates
    )
    assert (local.window_start, local.window_end) == (fanned.window_start, fanned.window_end)
    assert local.parameters["instrument_ids"] == fanned.parameters["instrument_ids"]
    local_tests = _tests_of(local)
    assert set(local_tests) == set(fanned_tests)
    for key, row in local_tests.items():
        _assert_rows_equal(fanned_tests[key], row, key)
    # The pair statistics the worker's merge wrote equal the in-process run's (all its tests, via its JSON).
    by_key = {(t["y"], t["x"]): t for t in outcome.as_json()["tests"]}
    assert {key for key, t in by_key.items() if t["candidate"]} == set(fanned_pairs)
    for key, row in fanned_pairs.items():
        row.pop("pk")
        test = by_key[key]
        assert row["pvalue"] == pytest.approx(test["pvalue"], rel=1e-9, abs=1e-15), key
        assert row["qvalue"] == pytest.approx(test["qvalue"], rel=1e-9), key
        assert row["hedge_ratio"] == pytest.approx(test["hedge_ratio"], rel=1e-9), key
        assert row["adf_stat"] == pytest.approx(test["adf_stat"], rel=1e-9), key
        assert row["adf_lag"] == test["lag"], key
        assert row["half_life_bars"] == pytest.approx(test["half_life"], rel=1e-9), key
        assert row["hurst"] == pytest.approx(test["hurst"], rel=1e-9), key
        assert row["mean_crossings"] == test["mean_crossings"], key
        assert row["screening_zscore"] == pytest.approx(test["zscore"], rel=1e-9), key
        assert row["johansen_passed"] is True
        assert row["consecutive_failures"] == 0
    assert Pair.objects.count() == len(fanned_pairs)  # the second run added no duplicates
