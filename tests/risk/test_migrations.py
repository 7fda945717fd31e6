"""risk 0006: the multiple a guard halt was raised at moves from its guard event onto the halt."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

BEFORE = [("risk", "0005_alter_guardevent_created_at_alter_halt_created_at")]
AFTER = [("risk", "0006_halt_breach_multiple")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_guard_halts_get_the_multiple_their_event_recorded():
    apps = _migrate(BEFORE)
    try:
        Halt, GuardEvent = apps.get_model("risk", "Halt"), apps.get_model("risk", "GuardEvent")
        at = timezone.now().replace(microsecond=0)
        measured = Halt.objects.create(source="guard", trigger="daily_loss", reason="daily loss", created_at=at)
        GuardEvent.objects.create(kind="daily_loss", severity="critical", message="m", created_at=at,
                                  details={"multiple_of_limit": 1.3})
        GuardEvent.objects.create(kind="daily_loss", severity="warning", message="m", created_at=at,
                                  details={"multiple_of_limit": 9.0})  # a warning is not the halt's event
        unmeasured = Halt.objects.create(source="guard", trigger="stale_data", reason="stale", created_at=at)
        manual = Halt.objects.create(source="manual", reason="by hand", created_at=at)
        apps = _migrate(AFTER)
        Halt = apps.get_model("risk", "Halt")
        assert Halt.objects.get(pk=measured.pk).breach_multiple == pytest.approx(1.3)
        assert Halt.objects.get(pk=unmeasured.pk).breach_multiple is None
        assert Halt.objects.get(pk=manual.pk).breach_multiple is None
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
