"""Worker start and stop as notifications (Celery's worker_ready and worker_shutdown signals).

Connected in ``NotificationsConfig.ready``; both run in the worker's main process. A database that is gone at
shutdown only costs the message (logged), never the shutdown.
"""

from __future__ import annotations

import logging
import socket

from celery.signals import worker_ready, worker_shutdown

from notifications.models import Notification
from notifications.services import notify

logger = logging.getLogger(__name__)


def _worker_name(sender) -> str:
    return str(getattr(sender, "hostname", None) or socket.gethostname())


def _queues(sender) -> str:
    try:
        return ", ".join(sorted(queue.name for queue in sender.app.amqp.queues.consume_from.values()))
    except AttributeError:
        return ""


@worker_ready.connect(dispatch_uid="notifications.worker_started")
def worker_started(sender=None, **kwargs) -> None:
    queues = _queues(sender)
    try:
        notify(topic="worker_started", severity=Notification.Severity.INFO,
               text=f"worker {_worker_name(sender)} started" + (f" (queues: {queues})" if queues else ""))
    except Exception:  # a notification must never stop a worker from starting
        logger.exception("could not store the worker_started notification")


@worker_shutdown.connect(dispatch_uid="notifications.worker_stopped")
def worker_stopped(sender=None, **kwargs) -> None:
    try:
        notify(topic="worker_stopped", severity=Notification.Severity.WARNING,
               text=f"worker {_worker_name(sender)} stopped")
    except Exception:
        logger.exception("could not store the worker_stopped notification")
