"""Writes of the notification outbox. A message is stored in the caller's transaction and sent later, so a rolled
back change never announces itself, and a chat that is down never blocks trading."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from core.secrets import redact
from notifications.models import Notification

MAX_TEXT = 4000  # Telegram's limit is 4096 characters


def notify(*, topic: str, text: str, severity: str = Notification.Severity.INFO, dedupe_key: str | None = None
           ) -> Notification | None:
    """Queue a message; with ``dedupe_key`` a message already queued under the same key is not queued again
    (returns None then). Known secret values are masked before anything is stored."""
    clean = redact(text)[:MAX_TEXT]
    if dedupe_key is None:
        return Notification.objects.create(topic=topic, text=clean, severity=severity)
    try:
        with transaction.atomic():
            return Notification.objects.create(topic=topic, text=clean, severity=severity, dedupe_key=dedupe_key)
    except IntegrityError:
        return None
