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
from risk.models import GuardEvent, Halt
from tests.factories import PairTradeFactory, RiskLimitFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
NOW = datetime(2026, 3, 2, 15, tzinfo=UTC)


@pytest.mark.skipif(connection.vendor != "mysql", reason="two connections writing at once: MySQL/MariaDB")
def test_two_guard_cycles_at_once_raise_one_halt(monkeypatch):
    limit = RiskLimitFactory(daily_loss_limit=Decimal("100"), stale_data_minutes=None, heartbeat_stale_seconds=None)
    PairTradeFactory(account=limit.account, state=PairTrade.State.CLOSED, opened_at=NOW - timedelta(hours=3),
                     closed_at=NOW - timedelta(hours=1), realised_pnl=Decimal("-250"))
    # Both cycles measure the loss before either raises its halt: each waits (a little) for the other here.
    both_measured = threading.Barrier(2, timeout=3)
    raise_halt = cycle.halt_raise

    def halt_raise_after_the_other_measured(**kwargs):
        try:
            both_measured.wait()
        except threading.BrokenBarrierError:
            pass  # the other cycle waits for this one: it raises alone
        return raise_halt(**kwargs)

    monkeypatch.setattr(cycle, "halt_raise", halt_raise_after_the_other_measured)
    errors = []

    def run():
        try:
            market = StoredMarket(timeframe="1h", clock=ManualClock(NOW))
            cycle.guard_run(now=NOW, market=market, accounts=[limit.account], live=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert list(Halt.objects.values_list("trigger", flat=True)) == ["daily_loss"]
    assert GuardEvent.objects.filter(kind="daily_loss").count() == 1
    assert AuditEntry.objects.filter(action="raise_halt").count() == 1
    assert Notification.objects.filter(topic="halt_raised").count() == 1
