"""Which Celery queues have a live worker: the part of ``/health/`` that sees a stopped risk, notifications,
selection or account worker (a stopped risk worker means no guard; beat's and the bots' checks don't show it).

The workers are asked with a broadcast (``inspect().active_queues()``), which reaches every worker on the broker,
on any machine. Only a broker with broadcast (Redis) can be asked; with the embedded broker the answer is
"unknown". A broadcast waits its whole timeout for replies, so an answer is kept for CACHE_SECONDS per process: a
load balancer probing every few seconds does not pay a second each time."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

from execution.models import ExchangeAccount
from monitoring.guard.live import WATCHED_QUEUES

logger = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 1.0
CACHE_SECONDS = 10.0
_cache: dict[str, object] = {}
_lock = threading.Lock()


def expected_queues() -> list[str]:
    """The queues a deployment must serve: the shared ones and each enabled account's own."""
    accounts = ExchangeAccount.objects.filter(enabled=True).order_by("pk")
    return list(WATCHED_QUEUES) + [account.queue_name for account in accounts]


def served_queues(app, *, timeout: float = INSPECT_TIMEOUT_S) -> set[str] | None:
    """The queues some live worker consumes, or None when the broker can't be asked (an error is logged)."""
    try:
        # A connection of its own, closed after the answer: the broadcast's reply subscription must not stay open in
        # the app's pool (a process forked later would run kombu's after-fork hooks on that socket).
        with app.connection_for_read() as connection:
            replies = app.control.inspect(timeout=timeout, connection=connection).active_queues() or {}
    except Exception:
        logger.warning("health: the workers could not be asked which queues they serve", exc_info=True)
        return None
    return {queue["name"] for queues in replies.values() for queue in queues or []}


def workers_check(app) -> dict:
    """``{"status": "ok" | "missing" | "unknown", "workers": n?, "missing": [queue, ...]}``, cached per process."""
    if not settings.BROKER_IS_REDIS:
        return {"status": "unknown"}
    expected = expected_queues()
    with _lock:
        cached = _cache.get("served")
        if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
            cached = (time.monotonic(), served_queues(app))
            _cache["served"] = cached
    served = cached[1]
    if served is None:
        return {"status": "unknown"}
    missing = [queue for queue in expected if queue not in served]
    return {"status": "missing" if missing else "ok", "queues": len(expected), "missing": missing}


def workers_cache_clear() -> None:
    with _lock:
        _cache.clear()
