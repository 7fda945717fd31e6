"""The bot task in a real `celery worker` process, on the account's own queue, at the wall clock."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from execution.models import BotHeartbeat, PairTrade, Signal
from execution.tasks import dispatch_bots, tick_send
from tests.execution.bot_world import BotWorld
from tests.statarb_site.test_celery_worker import TASK_TIMEOUT_S, start_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_dispatched_tick_runs_on_the_account_queue_and_opens_a_trade():
    # a random id: the account's queue can't hold messages of an earlier run
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    world = BotWorld(start=start, id=random.randint(100_000, 999_999))
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.3)
    with start_worker(world.account.queue_name):
        assert dispatch_bots.apply().get() == [world.account.pk]  # sends run_bot to the account's queue
        deadline = timezone.now() + timedelta(seconds=TASK_TIMEOUT_S)
        while timezone.now() < deadline and not PairTrade.objects.filter(state=PairTrade.State.OPEN).exists():
            time.sleep(0.5)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN
    heartbeat = BotHeartbeat.objects.get(account=world.account)
    assert heartbeat.status == "ok" and heartbeat.task_id and heartbeat.reconciled_at


def test_a_tick_that_waited_past_its_expiry_is_discarded_not_run_late(settings):
    """A worker back from an outage ran every tick queued while it was away, one after the other (one a minute, each
    repeating the same work at the time it ran). A tick still queued after STATARB_BOT_TICK_EXPIRES_S is discarded;
    a fresh one runs."""
    world = BotWorld(id=random.randint(100_000, 999_999))
    settings.STATARB_BOT_TICK_EXPIRES_S = 1
    stale = tick_send(world.account.pk)  # no worker serves the queue yet
    time.sleep(2)
    settings.STATARB_BOT_TICK_EXPIRES_S = 120
    with start_worker(world.account.queue_name) as output:
        fresh = tick_send(world.account.pk)
        deadline = timezone.now() + timedelta(seconds=TASK_TIMEOUT_S)
        while timezone.now() < deadline and not BotHeartbeat.objects.filter(task_id=fresh).exists():
            time.sleep(0.5)
    assert BotHeartbeat.objects.get(account=world.account).task_id == fresh
    log = "".join(output)
    assert f"Discarding revoked task: execution.tasks.run_bot[{stale}]" in log
    assert f"run_bot[{stale}] succeeded" not in log
