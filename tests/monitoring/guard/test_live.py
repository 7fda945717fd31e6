"""The guard as beat runs it: a cycle that fails guards no account, and says so."""

from __future__ import annotations

import pytest

from monitoring.guard import detectors
from monitoring.guard.live import guard_run_live
from notifications.models import Notification
from tests.factories import ExchangeAccountFactory, RiskLimitFactory

pytestmark = pytest.mark.django_db


def test_a_failing_cycle_is_told_once_an_hour_not_only_logged(monkeypatch):
    """A cycle that raises (a bug, bad data: a division by zero on a limit of 0 did) checks no account's limits; the
    worker lives and beat sends on, so /health/ stays green and only the risk worker's log knew."""
    RiskLimitFactory(account=ExchangeAccountFactory(name="main"))

    def broken(*args, **kwargs):
        raise ArithmeticError("a check that can't be computed")

    monkeypatch.setattr(detectors, "error_bursts", broken)
    for _ in range(2):
        with pytest.raises(ArithmeticError):
            guard_run_live()
    told = Notification.objects.get(topic="guard_failed")
    assert told.severity == Notification.Severity.CRITICAL
    assert "no account's limits are being checked: ArithmeticError: a check that can't be computed" in told.text
