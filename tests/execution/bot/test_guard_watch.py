"""The bots' check that the guard is running: with the scheduled guard silent for STATARB_GUARD_MAX_AGE_S (beat,
the risk worker or every cycle down), no loss limit is enforced, so no new trade is opened; exits go on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.clock import ManualClock
from execution.bot import guard_watch
from execution.bot import tick as tick_module
from execution.bot.guard_watch import configured_guard_max_age
from execution.bot.tick import bot_tick
from execution.models import ExchangeAccount, PairTrade, Signal
from monitoring.guard.cycle import guard_run
from notifications.models import Notification
from pairs.market import StoredMarket
from risk.models import AccountGuardState, GuardEvent
from tests.execution.bot_world import BotWorld

pytestmark = pytest.mark.django_db
MAX_AGE = timedelta(minutes=5)


@pytest.fixture
def world(monkeypatch) -> BotWorld:
    world = BotWorld()
    # the bot's process has run for an hour: the guard was silent while it ran
    monkeypatch.setattr(guard_watch, "PROCESS_STARTED", timezone.now() - timedelta(hours=1))
    # enabled and set up an hour ago: a silent guard is an alarm, not a new account waiting for its first cycle
    ExchangeAccount.objects.filter(pk=world.account.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    return world


def _tick(world: BotWorld, max_age: timedelta | None = MAX_AGE):
    world.account.refresh_from_db()
    exchange, market = world.paper_exchange()
    return bot_tick(account=world.account, exchange=exchange, market=market, config=world.config,
                    owner=world.owner, sleep=lambda s: None, guard_max_age=max_age)


def _guard_checked(world: BotWorld, ago: timedelta) -> None:
    AccountGuardState.objects.update_or_create(account=world.account,
                                               defaults={"live_checked_at": timezone.now() - ago})


def test_a_guard_that_never_checked_the_account_stops_its_entries_and_says_so_once(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    first = _tick(world)
    second = _tick(world)

    assert first.opened == second.opened == 0 and not PairTrade.objects.exists()
    assert "the guard has not checked this account within 300 s (never)" in first.skipped[-1]
    assert Notification.objects.filter(topic="guard_silent", severity="critical").count() == 1
    assert GuardEvent.objects.filter(kind="guard_silent", account=world.account).count() == 1


def test_a_guard_that_checked_the_account_lately_lets_it_trade(world):
    _guard_checked(world, timedelta(seconds=90))
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert _tick(world).opened == 1
    assert not Notification.objects.filter(topic="guard_silent").exists()


def test_with_the_guard_silent_exits_go_on_but_nothing_new_opens(world):
    _guard_checked(world, timedelta(seconds=30))
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert _tick(world).opened == 1
    _guard_checked(world, timedelta(minutes=6))  # the guard stopped six minutes ago

    world.next_bar(y="102", x="49", action=Signal.Action.EXIT, zscore=0.1)
    report = _tick(world)
    assert report.closed == 1 and world.trade().state == PairTrade.State.CLOSED
    world.next_bar(action=Signal.Action.ENTER_SHORT, zscore=2.3)
    report = _tick(world)
    assert report.opened == 0 and "last at" in report.skipped[-1]
    assert PairTrade.objects.count() == 1


def test_a_new_account_waits_for_the_guards_first_cycle_without_an_alarm(world):
    ExchangeAccount.objects.filter(pk=world.account.pk).update(updated_at=timezone.now())
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert _tick(world).opened == 0
    assert not Notification.objects.filter(topic="guard_silent").exists()


def test_only_the_scheduled_live_cycle_counts_as_the_guard_running(world):
    """The cycle a bot runs itself after a trade finishes, and a replay's, prove nothing about beat or the risk
    worker: they leave the stamp alone."""
    market = StoredMarket(timeframe="1h", clock=ManualClock(world.now))
    guard_run(now=world.now, market=market, accounts=[world.account], live=False)
    assert AccountGuardState.objects.get(account=world.account).live_checked_at is None
    before = timezone.now()
    guard_run(now=world.now, market=market, accounts=[world.account], process_now=timezone.now())
    assert AccountGuardState.objects.get(account=world.account).live_checked_at >= before
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert _tick(world).opened == 1


def test_live_ticks_read_the_setting_and_zero_turns_the_check_off(settings, monkeypatch):
    settings.STATARB_GUARD_MAX_AGE_S = 300
    assert configured_guard_max_age() == MAX_AGE
    settings.STATARB_GUARD_MAX_AGE_S = 0
    assert configured_guard_max_age() is None

    settings.STATARB_GUARD_MAX_AGE_S = 120
    asked = {}
    monkeypatch.setattr(tick_module, "bot_tick", lambda **kwargs: asked.update(kwargs))
    world = BotWorld()
    tick_module.bot_tick_live(world.account)
    assert asked["guard_max_age"] == timedelta(seconds=120)


def test_an_account_enabled_again_waits_for_the_guards_next_cycle_without_an_alarm(world):
    """The guard checks enabled accounts only: one disabled for a day and enabled again has an old stamp, which says
    nothing about the guard. Like a new account it opens nothing until the next cycle, with no critical alarm; the
    alarm comes once the guard stays silent for max_age after the change."""
    _guard_checked(world, timedelta(days=1))
    ExchangeAccount.objects.filter(pk=world.account.pk).update(updated_at=timezone.now())
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert _tick(world).opened == 0
    assert not Notification.objects.filter(topic="guard_silent").exists()
    assert not GuardEvent.objects.filter(kind="guard_silent").exists()

    ExchangeAccount.objects.filter(pk=world.account.pk).update(updated_at=timezone.now() - timedelta(minutes=6))
    assert "last at" in _tick(world).skipped[-1]
    assert Notification.objects.filter(topic="guard_silent", severity="critical").count() == 1


def test_a_stack_started_again_waits_for_the_guards_first_cycle_without_an_alarm(world, monkeypatch):
    """After the whole stack was down (a deploy, a reboot), the stamp is as old as the stop: the first ticks, which
    may come before the guard's first cycle (the demo's every 10 s, the guard's at the next minute), open nothing and
    raise no alarm; the alarm comes once the guard stays silent for max_age while the bot's process runs."""
    _guard_checked(world, timedelta(hours=2))
    monkeypatch.setattr(guard_watch, "PROCESS_STARTED", timezone.now() - timedelta(seconds=20))
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert _tick(world).opened == 0
    assert not Notification.objects.filter(topic="guard_silent").exists()

    monkeypatch.setattr(guard_watch, "PROCESS_STARTED", timezone.now() - timedelta(minutes=6))
    assert "last at" in _tick(world).skipped[-1]
    assert Notification.objects.filter(topic="guard_silent", severity="critical").count() == 1


def test_a_bots_own_cycle_does_not_write_back_an_older_stamp(world, monkeypatch):
    """The cycle a bot runs after a trade reads the account's guard state, then writes it: a scheduled cycle that
    committed in between (its stamp newer) must keep its stamp, which the bot's cycle has no news of."""
    from monitoring.guard import cycle

    market = StoredMarket(timeframe="1h", clock=ManualClock(world.now))
    _guard_checked(world, timedelta(minutes=4))
    newer = timezone.now()
    read = cycle.account_books

    def books_then_a_scheduled_cycle(*args, **kwargs):
        books = read(*args, **kwargs)
        AccountGuardState.objects.filter(account=world.account).update(live_checked_at=newer)
        return books

    monkeypatch.setattr(cycle, "account_books", books_then_a_scheduled_cycle)
    guard_run(now=world.now, market=market, accounts=[world.account], live=False)
    assert AccountGuardState.objects.get(account=world.account).live_checked_at == newer
