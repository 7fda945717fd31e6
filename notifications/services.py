"""Writes of the notification outbox. A message is stored in the caller's transaction, with one delivery row per
destination the routing names, and sent later (``notifications.sender``), so a rolled back change never announces
itself, and a chat that is down never blocks trading. After the commit a send is nudged on the notifications queue;
beat sweeps as well, so a lost nudge only delays a message."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.secrets import redact
from notifications.models import Delivery, Notification
from notifications.routing import routes_for

logger = logging.getLogger(__name__)

# Stored in full; the Telegram channel sends a longer text in parts of Telegram's 4,096 characters.
MAX_TEXT = 20_000

_held: contextvars.ContextVar[bool] = contextvars.ContextVar("notifications_held", default=False)
_echo: contextvars.ContextVar[Callable[[Notification], None] | None] = contextvars.ContextVar(
    "notifications_echo", default=None)


@contextlib.contextmanager
def notifications_held(held: bool = True) -> Iterator[None]:
    """Inside, notifications are stored as held (kept, never sent): a replay's, unless it was asked to notify."""
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)


@contextlib.contextmanager
def notifications_echoed(echo: Callable[[Notification], None] | None) -> Iterator[None]:
    """Inside, ``echo(notification)`` is called for each notification once its transaction commits (a rolled back
    one never shows), besides whatever the outbox does with it: the demo prints its replay's held notifications
    to the console this way. ``None`` echoes nothing."""
    token = _echo.set(echo)
    try:
        yield
    finally:
        _echo.reset(token)


def notify(*, topic: str, text: str, severity: str = Notification.Severity.INFO, dedupe_key: str | None = None
           ) -> Notification | None:
    """Queue a message; with ``dedupe_key`` a message already queued under the same key is not queued again
    (returns None then). Known secret values are masked before anything is stored."""
    clean = redact(text)[:MAX_TEXT]
    held = _held.get()
    values = {"topic": topic[:48], "text": clean, "severity": severity,
              "status": Notification.Status.HELD if held else Notification.Status.PENDING}
    if dedupe_key is None:  # no savepoint needed: nothing here is expected to fail
        notification = Notification.objects.create(**values)
    else:
        try:
            with transaction.atomic():
                notification = Notification.objects.create(dedupe_key=dedupe_key, **values)
        except IntegrityError:
            return None
    if not held:
        _deliveries_create(notification)
        nudge_after_commit()
    echo = _echo.get()
    if echo is not None:
        transaction.on_commit(functools.partial(echo, notification), robust=True)
    return notification


def notify_destination_lost(channel: str, target: str, reason: str) -> Notification | None:
    """A destination refused a message for good (a chat deleted, the bot blocked): its alerts stop until a person
    fixes the setting, so the other destinations are told, once a day per destination (every later message to it
    gives up the same way). Never to the destination itself."""
    day = timezone.now().date().isoformat()
    text = (f"Notifications to {channel} {target} stopped: {reason}\n"
            "Its messages are kept (admin: Notifications > Deliveries, 'Send again' once the setting is fixed).")
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                topic="notification_destination_lost", text=redact(text)[:MAX_TEXT],
                severity=Notification.Severity.CRITICAL, dedupe_key=f"destination_lost:{channel}:{target}:{day}"[:191])
    except IntegrityError:
        return None
    _deliveries_create(notification, skip=(channel, target))
    nudge_after_commit()
    return notification


def _deliveries_create(notification: Notification, *, skip: tuple[str, str] | None = None) -> None:
    now = timezone.now()
    Delivery.objects.bulk_create([
        Delivery(notification=notification, channel=route.channel, target=route.target, created_at=now,
                 next_attempt_at=now)
        for route in routes_for(notification.severity) if (route.channel, route.target) != skip
    ])


def nudge_after_commit() -> None:
    """A send task after the commit (none while NOTIFICATIONS_NUDGE is off: tests). A spare nudge costs one empty
    sweep; a nudge lost with a rollback never mattered."""
    if getattr(settings, "NOTIFICATIONS_NUDGE", True):
        transaction.on_commit(_nudge, robust=True)


_pending_nudges: set[threading.Thread] = set()
_pending_lock = threading.Lock()
# How long a process that ends (a command: `manage.py halt`) waits for its nudges to reach the broker.
NUDGE_FLUSH_S = 5.0


def _nudge() -> None:
    # A broker that is down or hung can take seconds to refuse: the committing code (a bot tick) never waits on it.
    thread = threading.Thread(target=_nudge_now, name="notifications-nudge", daemon=True)
    with _pending_lock:
        _pending_nudges.add(thread)
    thread.start()


def _nudge_now() -> None:
    from notifications.tasks import send_notifications

    try:
        send_notifications.apply_async(retry=False)
    except Exception:  # a broker that is down must not fail anyone; beat's sweep sends within 30 s
        logger.warning("could not enqueue a notification send (beat's sweep will send it)", exc_info=True)
    finally:
        with _pending_lock:
            _pending_nudges.discard(threading.current_thread())


@atexit.register
def flush_nudges(timeout: float = NUDGE_FLUSH_S) -> None:
    """Let the nudges still on their way reach the broker before the process ends: a command's daemon thread would
    die with it, and its alert (a kill switch from `manage.py halt`) wait for beat's sweep instead of going now."""
    deadline = time.monotonic() + timeout
    with _pending_lock:
        pending = list(_pending_nudges)
    for thread in pending:
        thread.join(max(0.0, deadline - time.monotonic()))
