"""A real Celery worker process, on the configured broker, writes to the configured (test) database.

Not eager mode: the task travels through the broker (Redis in CI, the embedded SQLite transport otherwise) to a
separate `celery worker` process, which opens its own connection to the test database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings

from core.secrets import MASK
from execution.tasks import run_bot
from monitoring.tasks import snapshot_daily_pnl
from risk.models import DailyPnlSnapshot
from statarb_site.celery import app as celery_app
from tests.conftest import REPO_ROOT
from tests.factories import ExchangeAccountFactory, PairTradeFactory
from tests.fakes.bybit import FakeBybit
from tests.live_server import session_database_url

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

WORKER_START_TIMEOUT_S = 60
TASK_TIMEOUT_S = 60


@pytest.fixture
def worker_queue():
    """Start `celery worker` on a queue of its own (so stale messages of other runs can't interfere)."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    with start_worker(queue):
        yield queue


@contextlib.contextmanager
def start_worker(queue: str, extra_env: dict[str, str] | None = None, loglevel: str = "info",
                 include: str | None = None):
    """A `celery worker` process (solo pool) consuming ``queue``, on this session's test database and broker; yields
    the list its output lines are added to (read by a thread until the worker stops)."""
    env = {**os.environ, "DATABASE_URL": session_database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND, "CELERY_TASK_ALWAYS_EAGER": "0",
           **(extra_env or {})}
    command = [sys.executable, "-m", "celery", "-A", "statarb_site", "worker", "--pool", "solo", "-Q", queue,
               "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle", "-l", loglevel]
    if include:
        command += ["--include", include]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output: list[str] = []
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            output.append(line)
            if " ready." in line:
                break
        else:
            pytest.fail("celery worker did not start in time:\n" + "".join(output))
        if process.poll() is not None:
            pytest.fail("celery worker exited:\n" + "".join(output))
        reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
        reader.start()
        yield output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(NameError):
            reader.join(timeout=5)


def test_task_runs_in_a_real_worker_and_writes_the_database(worker_queue):
    account = ExchangeAccountFactory(capital=Decimal("10000"))
    PairTradeFactory(
        account=account,
        state="closed",
        closed_at=datetime(2021, 3, 1, 15, tzinfo=UTC),
        realised_pnl=Decimal("123.456789"),
        fees=Decimal("1.1"),
        funding=Decimal("-0.25"),
    )

    result = snapshot_daily_pnl.apply_async(kwargs={"day": "2021-03-01"}, queue=worker_queue)

    assert result.get(timeout=TASK_TIMEOUT_S) == 1
    snapshot = DailyPnlSnapshot.objects.get(account=account, date=datetime(2021, 3, 1).date())
    assert snapshot.realised_pnl == Decimal("123.456789")
    assert snapshot.ending_equity == Decimal("10123.456789")
    assert snapshot.fees == Decimal("1.1")
    assert snapshot.trades_closed == 1


def test_a_worker_masks_the_secrets_it_holds_in_its_log(fake_bybit_with_echoing_auth, secrets_key):
    """A worker at debug level, whose exchange echoes the API key back in an error (as a misconfigured proxy or an
    exchange error can), logs the error masked: neither the key, the API secret nor the master key reach its output.
    Celery's own logging set-up would print them (ccxt logs every request's headers at debug level); the worker uses
    settings.LOGGING, whose filter masks them."""
    fake, api_key, api_secret = fake_bybit_with_echoing_auth
    account = ExchangeAccountFactory(mode="demo", base_url_override=fake.base_url, api_key_env="STATARB_CRED_W_KEY",
                                     api_secret_env="STATARB_CRED_W_SECRET")
    queue = f"test-{uuid.uuid4().hex[:10]}"
    env = {"STATARB_CRED_W_KEY": api_key, "STATARB_CRED_W_SECRET": api_secret, "STATARB_SECRETS_KEY": secrets_key,
           "LOG_LEVEL": "DEBUG"}
    with start_worker(queue, extra_env=env, loglevel="debug", include="tests.statarb_site.worker_tasks") as output:
        assert run_bot.apply_async((account.pk,), queue=queue).get(timeout=TASK_TIMEOUT_S)["status"] \
            == "reconcile_failed"
        # A careless line in any module: the filter on the worker's handlers masks it all the same.
        assert celery_app.send_task("tests.log_the_credentials", (account.pk,), queue=queue).get(
            timeout=TASK_TIMEOUT_S) == "logged"
    log = "".join(output)
    assert "is not valid" in log and "connecting with key" in log and "the master key is" in log, log
    assert "a traceback" in log and "RuntimeError: failed with" in log
    assert MASK in log
    for secret in (api_key, api_secret, secrets_key):
        assert secret not in log


@pytest.fixture
def fake_bybit_with_echoing_auth():
    api_key, api_secret = f"WKEY{uuid.uuid4().hex[:16]}", f"WSECRET{uuid.uuid4().hex}"
    with FakeBybit() as server:
        server.fail_next(None, 10003, f"API key {api_key} is not valid", times=1000)
        yield server, api_key, api_secret
