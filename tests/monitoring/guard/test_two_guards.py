"""Two guard cycles at once (the minute's cycle and the one a trade's close runs in the bot's process, or two risk
workers): a breach both see is raised, audited and told once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from core.clock import ManualClock
from core.models import AuditEntry
from execution.models import PairTrade
from monitoring.guard import cycle
from notifications.models import Notification
from pairs.market import StoredMarket
from risk import services
from risk.models import GuardEvent, Halt
from tests.concurrency import twice_at_once
from tests.factories import ExchangeAccountFactory, HaltFactory, PairTradeFactory, RiskLimitFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
NOW = datetime(2026, 3, 2, 15, tzinfo=UTC)


MYSQL_ONLY = pytest.mark.skipif(connection.vendor != "mysql", reason="two connections writing at once: MySQL/MariaDB")


def wait_for_the_other_before(module, name: str, monkeypatch) -> None:
    """Each of two threads calling ``module.name`` waits (a little) for the other there: both have done what comes
    before it. A thread that the other waits for (a row lock) goes on alone."""
    both_there = threading.Barrier(2, timeout=3)
    original = getattr(module, name)

    def after_the_other(**kwargs):
        try:
            both_there.wait()
        except threading.BrokenBarrierError:
            pass
        return original(**kwargs)

    monkeypatch.setattr(module, name, after_the_other)


@MYSQL_ONLY
def test_two_guard_cycles_at_once_raise_one_halt(monkeypatch):
    limit = RiskLimitFactory(daily_loss_limit=Decimal("100"), stale_data_minutes=None, heartbeat_stale_seconds=None)
    PairTradeFactory(account=limit.account, state=PairTrade.State.CLOSED, opened_at=NOW - timedelta(hours=3),
                     closed_at=NOW - timedelta(hours=1), realised_pnl=Decimal("-250"))
    # Both cycles measure the loss before either raises its halt.
    wait_for_the_other_before(cycle, "halt_raise", monkeypatch)
    market = StoredMarket(timeframe="1h", clock=ManualClock(NOW))
    errors = twice_at_once(lambda: cycle.guard_run(now=NOW, market=market, accounts=[limit.account], live=False))
    assert errors == []
    assert list(Halt.objects.values_list("trigger", flat=True)) == ["daily_loss"]
    assert GuardEvent.objects.filter(kind="daily_loss").count() == 1
    assert AuditEntry.objects.filter(action="raise_halt").count() == 1
    assert Notification.objects.filter(topic="halt_raised").count() == 1


@MYSQL_ONLY
def test_two_guard_cycles_at_once_end_a_latch_once(monkeypatch):
    account = ExchangeAccountFactory()
    HaltFactory(account=account, source=Halt.Source.GUARD, trigger="daily_loss", until=NOW - timedelta(minutes=1),
                created_at=NOW - timedelta(hours=2))
    wait_for_the_other_before(services, "halts_clear", monkeypatch)
    results = []
    assert twice_at_once(lambda: results.append(services.expired_halts_clear(now=NOW))) == []
    assert sorted(len(r) for r in results) == [0, 1]
    assert AuditEntry.objects.filter(action="halt_expired").count() == 1
    assert Halt.objects.get().cleared_at == NOW
