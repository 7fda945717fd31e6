"""Worker start and stop become notifications (Celery's worker_ready and worker_shutdown signals)."""

from __future__ import annotations

import pytest
from celery.signals import worker_ready, worker_shutdown

from notifications.models import Notification

pytestmark = pytest.mark.django_db


class Worker:
    hostname = "w1@box"


def test_worker_start_and_stop_are_notified():
    worker = Worker()
    worker_ready.send(sender=worker)
    worker_shutdown.send(sender=worker)
    notes = list(Notification.objects.order_by("pk").values_list("topic", "severity", "text"))
    assert notes == [("worker_started", "info", "worker w1@box started"),
                     ("worker_stopped", "warning", "worker w1@box stopped")]
