"""The served demo's stored-data clock: the live tasks (signals, bot, guard) run through stored 2021 candles at the
clock's time, the guard judges staleness against it, demo and real accounts refuse it, and its end is told."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core.clock import SimulatedClock, WallClock
from core.market_clock import StoredClockNotStarted, market_clock, stored_clock_start, stored_clock_step
from core.models import StoredDataClock
from execution.bot.tick import bot_tick
from execution.models import BotHeartbeat, Order, PairTrade, Signal
from execution.paper.exchange import paper_exchange_for
from execution.tasks import run_bot
from monitoring.guard.live import guard_run_live
from monitoring.tasks import run_guard
from notifications.models import Notification
from pairs.market import StoredMarket
from pairs.models import Candle
from risk.models import GuardEvent, Halt, RiskLimit
from statarb_site.celery import app as celery_app
from statarb_site.demo_clock import SCHEDULE_NAME, demo_clock_setup
from statarb_site.pipelines import market_data_pipeline, stored_clock_pipeline
from tests.execution.bot_world import HOUR, BotWorld
from tests.factories import ExchangeAccountFactory
from tests.statarb_site.test_celery_worker import TASK_TIMEOUT_S, start_worker

STORED = {"STATARB_MARKET_CLOCK": "stored"}


@contextlib.contextmanager
def eager_celery():
    """Celery runs every task sent (the chain of a clock step, the bot ticks dispatched to the account queues) in
    this process, as the worker would: the real task functions, no broker."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = before


def stored_world(**account) -> tuple[BotWorld, list]:
    """Stored candles of 1 March 2021, bars 00:00 to 05:00 (the clock then walks through them); a system-wide
    stale-data limit of 150 minutes."""
    RiskLimit.objects.update_or_create(account=None, defaults={"stale_data_minutes": 150})
    world = BotWorld(**account)
    bars = [world.next_bar()]
    for y, x in (("101", "50"), ("102", "50"), ("102", "51"), ("103", "51")):
        bars.append(world.next_bar(y=y, x=x))
    return world, bars


def signal_on(world: BotWorld, bar_time, action: str, zscore: float) -> Signal:
    """The rule's signal on a bar that has just closed on the clock, as the signals task writes it (the z-score
    window of this small market is too short for the rule itself)."""
    world.bar, newest = bar_time, world.bar
    try:
        return world.signal(action, zscore=zscore)
    finally:
        world.bar = newest


def start_clock(world: BotWorld, bars: list, *, at) -> StoredDataClock:
    return stored_clock_start(start=at, end=bars[-1] + HOUR, bar=HOUR, wall_seconds=1)


def test_the_wall_clock_unless_the_setting_says_stored(settings, db):
    settings.STATARB_MARKET_CLOCK = "wall"
    assert isinstance(market_clock(), WallClock)
    settings.STATARB_MARKET_CLOCK = "stored"
    with pytest.raises(StoredClockNotStarted, match="run_stack"):
        market_clock()


@pytest.mark.django_db
def test_a_few_bars_of_the_stored_clock_through_the_bot_task_and_the_guard(settings):
    settings.STATARB_MARKET_CLOCK = "stored"
    world, bars = stored_world()
    entry_bar, exit_bar = bars[0], bars[2]
    clock = start_clock(world, bars, at=entry_bar + HOUR)
    wall = timezone.now()
    moments = []
    signals = {entry_bar: (Signal.Action.ENTER_LONG, -2.3), exit_bar: (Signal.Action.EXIT, 0.0)}
    with eager_celery():
        for step in range(4):  # 02:00 (opens), 03:00, 04:00 (closes on the 03:00 exit signal), 05:00
            moments.append(market_clock().now())
            if (closed_bar := moments[-1] - HOUR) in signals:
                signal_on(world, closed_bar, *signals[closed_bar])
            report = run_bot.apply(args=(world.account.pk,)).get()
            assert report["status"] == "ok", report
            guard = run_guard.apply().get()
            assert not [b for b in guard["breaches"] if b.startswith("stale_data")], guard
            stored_clock_step(wall_now=wall + timedelta(seconds=step + 1))
    assert moments == [entry_bar + HOUR * k for k in range(1, 5)]
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED
    # dated on the stored clock: opened at the close of the entry bar, closed at the close of the exit bar
    assert trade.opened_at == entry_bar + HOUR and trade.closed_at == exit_bar + HOUR
    orders = list(Order.objects.filter(trade=trade))
    assert len(orders) == 4
    assert {o.submitted_at for o in orders} == {entry_bar + HOUR, exit_bar + HOUR}
    fills = [f for o in orders for f in o.fills.all()]
    # the execution model: the open of the bar opening at the clock (the stored candles here), plus slippage
    assert {f.filled_at for f in fills} == {entry_bar + HOUR, exit_bar + HOUR}
    assert all(f.filled_at.year == 2021 for f in fills)
    for fill in fills:  # at the stored bar's open, within the paper exchange's slippage
        stored_open = Candle.objects.get(instrument=fill.order.instrument, timeframe="1h",
                                         open_time=fill.filled_at).open
        assert abs(fill.price / stored_open - 1) < Decimal("0.005"), (fill.price, stored_open)
    assert not GuardEvent.objects.filter(kind="stale_data").exists()
    assert not Halt.objects.filter(trigger="stale_data").exists()
    assert clock.start == entry_bar + HOUR


@pytest.mark.django_db
def test_on_the_wall_clock_the_same_candles_are_stale(settings):
    """The contrast: the guard at the machine's clock finds the 2021 candles stale."""
    settings.STATARB_MARKET_CLOCK = "wall"
    stored_world()
    report = guard_run_live()
    assert [b for b in report.breaches if b.check == "stale_data"]


@pytest.mark.django_db
def test_on_the_stored_clock_a_stopped_bot_is_still_found_by_its_wall_clock_heartbeat(settings):
    """The heartbeat is a process check: the bot writes it on the wall clock, and the guard judges it on the wall
    clock while the market runs on the stored one (2021): a bot silent for 20 minutes is reported, a bot that beat a
    minute ago is not."""
    settings.STATARB_MARKET_CLOCK = "stored"
    world, bars = stored_world()
    start_clock(world, bars, at=bars[1] + HOUR)
    RiskLimit.objects.update_or_create(account=world.account, defaults={"heartbeat_stale_seconds": 300})
    BotHeartbeat.objects.create(account=world.account, beat_at=timezone.now() - timedelta(minutes=1))
    assert not [b for b in guard_run_live().breaches if b.check == "heartbeat"]
    BotHeartbeat.objects.filter(account=world.account).update(beat_at=timezone.now() - timedelta(minutes=20))
    report = guard_run_live()
    assert report.at.year == 2021
    assert [b.check for b in report.breaches if b.account_id == world.account.pk and b.check == "heartbeat"] == \
        ["heartbeat"]
    assert GuardEvent.objects.filter(kind="heartbeat", account=world.account).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["real", "demo"])
def test_a_real_or_demo_account_refuses_the_simulated_clock(settings, mode):
    settings.STATARB_MARKET_CLOCK = "stored"
    world, bars = stored_world()
    start_clock(world, bars, at=bars[0] + HOUR)
    account = ExchangeAccountFactory(mode=mode, level=world.level, api_key_env="STATARB_CRED_X_KEY",
                                     api_secret_env="STATARB_CRED_X_SECRET")
    report = run_bot.apply(args=(account.pk,)).get()
    assert report["status"] == "refused"
    assert f"a {mode} account trades only on the wall clock" in report["error"]
    assert not PairTrade.objects.filter(account=account).exists()
    assert not BotHeartbeat.objects.filter(account=account).exists()  # not even the lease was taken
    # the engine itself refuses too, whoever calls it with a simulated clock
    clock = SimulatedClock(bars[0] + HOUR)
    market = StoredMarket(timeframe="1h", clock=clock)
    direct = bot_tick(account=account, exchange=paper_exchange_for(world.account, market=market, config=world.config),
                      market=market, config=world.config, sleep=lambda s: None)
    assert direct.status == "refused"


@pytest.mark.django_db
def test_the_clock_step_runs_the_pipeline_and_says_when_the_data_runs_out(settings, staff_client, caplog):
    settings.STATARB_MARKET_CLOCK = "stored"
    world, bars = stored_world()
    demo_clock_setup(start=bars[-2] + HOUR, bar_seconds=1)  # one bar before the end, and beat's step entry
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.get(name=SCHEDULE_NAME).enabled
    with eager_celery(), caplog.at_level(logging.WARNING):
        first = stored_clock_pipeline.apply().get()
        second = stored_clock_pipeline.apply().get()  # a duplicate within the pace: nothing moves
    assert first == {"stepped": True, "moment": (bars[-1] + HOUR).isoformat(), "ended": True}
    assert second["stepped"] is False and second["ended"] is True
    assert BotHeartbeat.objects.get(account=world.account).status == "ok"  # the chain ticked the bot
    assert "the stored candles end at 2021-03-01 06:00" in caplog.text
    assert Notification.objects.filter(topic="stored_clock_ended").count() == 1
    page = staff_client.get("/system/").content.decode()
    assert "Demo: stored-data clock (simulated)." in page and "The stored data ran out at 2021-03-01 06:00" in page
    assert "The stored data ran out" in staff_client.get("/").content.decode()
    assert market_data_pipeline.apply().get() == ""  # no fetch of today's candles on the stored clock
    assert not PeriodicTask.objects.get(name=SCHEDULE_NAME).enabled  # beat stops sending the step


@pytest.mark.django_db
def test_setup_resumes_refuses_going_back_and_is_off_on_the_wall_clock(settings):
    settings.STATARB_MARKET_CLOCK = "stored"
    _, bars = stored_world()
    clock = demo_clock_setup(bar_seconds=5)  # first start: a week before the end, bounded by the first stored bar
    assert clock.moment == bars[0] and clock.end == bars[-1] + HOUR and clock.bars_total == 5
    stored_clock_step()
    assert demo_clock_setup(bar_seconds=5).moment == bars[0] + HOUR  # resumed where it stood
    from core.models import AuditEntry

    assert list(AuditEntry.objects.filter(action="stored_clock_start").values_list("channel", flat=True)) == [
        "command", "command"]
    with pytest.raises(ValueError, match="can't go back"):
        demo_clock_setup(start=bars[0], bar_seconds=5)
    settings.STATARB_MARKET_CLOCK = "wall"
    assert demo_clock_setup(bar_seconds=5) is None
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.get(name=SCHEDULE_NAME).enabled is False


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_trades_on_the_stored_clock():
    """The bot task in a real `celery worker` process started with STATARB_MARKET_CLOCK=stored: it opens the trade at
    the stored clock's time, on stored prices, and the guard there finds no stale data."""
    RiskLimit.objects.update_or_create(account=None, defaults={"stale_data_minutes": 150})
    world = BotWorld(id=random.randint(100_000, 999_999))  # an account queue no earlier run has used
    entry_bar = world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.3)
    last = world.next_bar(y="101")
    stored_clock_start(start=entry_bar + HOUR, end=last + HOUR, bar=HOUR, wall_seconds=1)
    with start_worker(world.account.queue_name, extra_env=STORED):
        run_bot.apply_async((world.account.pk,), queue=world.account.queue_name)
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while time.monotonic() < deadline and not PairTrade.objects.filter(state=PairTrade.State.OPEN).exists():
            time.sleep(0.5)
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN and trade.opened_at == entry_bar + HOUR
    assert BotHeartbeat.objects.get(account=world.account).status == "ok"


@pytest.mark.django_db
def test_run_stack_starts_the_clock_and_says_so(settings):
    from io import StringIO

    from django.core.management.base import CommandError

    from statarb_site.management.commands.run_stack import Command

    _, bars = stored_world()
    out = StringIO()
    with pytest.raises(CommandError, match="need STATARB_MARKET_CLOCK=stored"):
        Command(stdout=out)._clock_setup(bars[0], None)
    settings.STATARB_MARKET_CLOCK = "stored"
    Command(stdout=out)._clock_setup(bars[1], 2.5)
    assert ("stored-data clock (demo, simulated): paper accounts trade the stored candles from 2021-03-01 02:00 UTC "
            "to 2021-03-01 06:00 UTC, one 1:00:00 bar every 2.5 s of wall time (4 bars") in out.getvalue()
    with pytest.raises(CommandError, match="can't go back"):
        Command(stdout=out)._clock_setup(bars[0], None)


@pytest.mark.django_db
def test_a_clock_start_between_two_bar_closes_is_refused_naming_the_bar_close(settings):
    """Started mid-bar, the clock would stay mid-bar at every step, and each paper fill (the open of the bar in
    progress) would take a price from before the decision."""
    settings.STATARB_MARKET_CLOCK = "stored"
    _, bars = stored_world()
    with pytest.raises(ValueError, match=r"starts at a bar close .*like 2021-03-01T02:00.*got 2021-03-01T02:30:00"):
        demo_clock_setup(start=bars[0] + HOUR + timedelta(minutes=30), bar_seconds=5)
    assert not StoredDataClock.objects.exists()
    assert demo_clock_setup(start=bars[0] + HOUR, bar_seconds=5).moment == bars[0] + HOUR
