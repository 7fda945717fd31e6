"""Only the lease holder sends orders and writes (issue #12): a worker stalled past its lease while another takes
the account over writes nothing when it wakes, so there is exactly one set of orders and one notification."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from execution.models import BotHeartbeat, Order, PairTrade, Signal
from notifications.models import Notification
from tests.execution.bot.fault_world import assert_consistent, tick

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.parametrize("stall_at", ["after_send:yo1", "before_send:xo1", "after_send:xo1"])
def test_a_worker_stalled_past_its_lease_writes_nothing_when_it_wakes(world, fake, stall_at):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    stalled, resume = threading.Event(), threading.Event()
    reports = {}

    def stall(step: str) -> None:
        if step == stall_at:
            stalled.set()
            assert resume.wait(30)  # a long GC pause, a hung call: the lease runs out meanwhile

    def worker_a() -> None:
        try:
            reports["a"] = tick(world, owner="worker-a", checkpoint=stall)
        finally:
            connection.close()

    thread = threading.Thread(target=worker_a)
    thread.start()
    assert stalled.wait(30)
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)  # worker A's lease expired
    reports["b"] = tick(world, owner="worker-b")  # takes the account over and finishes the open
    resume.set()
    thread.join(60)

    assert reports["b"].status == "ok", reports["b"]
    assert reports["a"].status == "lease_lost", reports["a"]
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN
    assert len(fake.orders(symbol="YYYUSDT")) == 1 and len(fake.orders(symbol="XXXUSDT")) == 1
    assert Order.objects.count() == 2
    assert Notification.objects.filter(topic="trade_opened").count() == 1
    assert BotHeartbeat.objects.get(account=world.account).lease_owner == "worker-b"
    assert_consistent(world, fake)


def test_every_new_lease_has_a_new_generation(world, fake):
    world.next_bar(action=Signal.Action.HOLD)
    tick(world, owner="worker-a")
    first = BotHeartbeat.objects.get(account=world.account).lease_generation
    tick(world, owner="worker-a")
    assert BotHeartbeat.objects.get(account=world.account).lease_generation == first  # renewed: the same lease
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)
    tick(world, owner="worker-b")
    assert BotHeartbeat.objects.get(account=world.account).lease_generation == first + 1
