"""`manage.py run_stack` as `make demo` serves it: web, the shared worker, the account worker and beat, on the
stored-data clock. Every bot tick of the account lands on the one process that holds its lease: none is refused as
"locked" (with the account queues in a two-process pool most of them were, and the paper account missed bars)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command

from core.models import StoredDataClock
from execution.models import BotHeartbeat
from risk.models import RiskLimit
from tests.conftest import REPO_ROOT
from tests.execution.bot_world import HOUR, BotWorld
from tests.live_server import free_port, session_database_url

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
RUN_SECONDS = 45
TICK_RESULT = re.compile(r"execution\.tasks\.run_bot\[[^\]]+\] succeeded in [0-9.e-]+s: \{'account': '([^']+)', "
                         r"'now': '([^']+)', 'status': '([a-z_]+)'")


def test_the_stack_serves_the_stored_clock_and_every_tick_holds_the_lease():
    RiskLimit.objects.update_or_create(account=None, defaults={"stale_data_minutes": 150})
    world = BotWorld(id=random.randint(100_000, 999_999))  # an account queue no earlier run has used
    bars = [world.next_bar()] + [world.next_bar(y=y) for y in ("101", "102", "101", "100", "101", "102", "103")]
    call_command("setup_periodic_tasks", verbosity=0)
    env = {**os.environ, "DATABASE_URL": session_database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND, "CELERY_TASK_ALWAYS_EAGER": "0",
           "STATARB_MARKET_CLOCK": "stored", "DEBUG": "0"}
    command = [sys.executable, "manage.py", "run_stack", "--bind", f"127.0.0.1:{free_port()}", "--exit-after",
               str(RUN_SECONDS), "--bar-seconds", "2", "--clock-start", (bars[1] + HOUR).strftime("%Y-%m-%dT%H:%M")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_SECONDS + 90)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert f"account worker: {world.account.queue_name}" in done.stdout
    ticks = [(now, status) for account, now, status in TICK_RESULT.findall(log) if account == world.account.name]
    assert len(ticks) >= 3, log[-4000:]
    assert [t for t in ticks if t[1] != "ok"] == [], ticks
    assert len({now for now, _ in ticks}) >= 2  # the clock moved under the bot
    assert StoredDataClock.objects.get(pk=1).moment > bars[1] + HOUR
    assert BotHeartbeat.objects.get(account=world.account).status == "ok"
