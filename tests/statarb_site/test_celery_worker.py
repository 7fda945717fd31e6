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
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection

from monitoring.tasks import snapshot_daily_pnl
from risk.models import DailyPnlSnapshot
from tests.conftest import REPO_ROOT
from tests.factories import ExchangeAccountFactory, PairTradeFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

WORKER_START_TIMEOUT_S = 60
TASK_TIMEOUT_S = 60


def _test_database_url() -> str:
    """The URL of the database this test session really uses (pytest-django's test_ database)."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    if connection.vendor == "mysql":
        password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
        port = f":{params['PORT']}" if params["PORT"] else ""
        return f"mysql://{params['USER']}{password}@{params['HOST'] or '127.0.0.1'}{port}/{params['NAME']}"
    raise AssertionError(f"no URL rule for database vendor {connection.vendor}")


@pytest.fixture
def worker_queue():
    """Start `celery worker` on a queue of its own (so stale messages of other runs can't interfere)."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    with start_worker(queue):
        yield queue


@contextlib.contextmanager
def start_worker(queue: str):
    """A `celery worker` process (solo pool) consuming ``queue``, on this session's test database and broker."""
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND, "CELERY_TASK_ALWAYS_EAGER": "0"}
    command = [sys.executable, "-m", "celery", "-A", "statarb_site", "worker", "--pool", "solo", "-Q", queue,
               "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle", "-l", "info"]
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
        yield queue
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
