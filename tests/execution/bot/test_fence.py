"""Only the lease holder sends orders and writes (issue #12): a worker stalled past its lease while another takes
the account over writes nothing when it wakes, so there is exactly one set of orders and one notification."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

from core.clock import ManualClock
from execution.bot.tick import bot_tick
from execution.models import BotHeartbeat, Order, PairTrade, Signal, SignalState
from notifications.models import Notification
from pairs.market import StoredMarket
from tests.execution.bot.fault_world import CREATE, assert_consistent, exchange_of, tick

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


def test_a_retry_of_a_send_after_the_lease_passed_on_does_not_go_out(world, fake):
    """Worker A's send of the second leg gets a 503 page (nothing applied) and the exchange client waits to retry
    it; meanwhile A's lease runs out and worker B takes the account over after the rule left the position: B finds
    the leg unsent past the stale-plan age, its entry lapsed, and unwinds the first. A's retry, when A wakes, must
    not go out: it would put on the exchange an x leg that no trade holds (the lease is renewed before every send,
    a retry of one included)."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    start = world.now
    taken_over = []

    def sleep(seconds: float) -> None:  # worker A waiting to retry: B runs meanwhile
        if taken_over:
            return
        taken_over.append(True)
        SignalState.objects.filter(pair=world.pair).update(position=0)  # the rule left the position
        BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)  # A's lease expired
        for minute in (6, 7, 8):
            tick(world, owner="worker-b", now=start + timedelta(minutes=minute))

    def checkpoint(step: str) -> None:
        if step == "before_send:xo1":
            fake.http_error_next(CREATE, 503, symbol="XXXUSDT")

    world.account.refresh_from_db()
    report = bot_tick(account=world.account, exchange=exchange_of(world), config=world.config, owner="worker-a",
                      market=StoredMarket(timeframe="1h", clock=ManualClock(start)), checkpoint=checkpoint,
                      sleep=sleep)

    assert taken_over and report.status == "lease_lost", report
    assert world.trade().state == PairTrade.State.UNWOUND
    assert fake.position("XXXUSDT").size == 0  # no leg on the exchange that no trade holds
    xo1 = Order.objects.get(leg="x", action=Order.Action.OPEN).client_order_id
    assert len(fake.requests_to(CREATE, orderLinkId=xo1)) == 1  # the 503'd one; no retry after the lease passed on
    assert_consistent(world, fake)
