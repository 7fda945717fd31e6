"""The notification outbox: messages are written in the same transaction as what caused them, sent later."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Notification(models.Model):
    class Channel(models.TextChoices):
        TELEGRAM = "telegram", "Telegram"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (gave up)"

    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.TELEGRAM)
    topic = models.CharField(max_length=48, db_index=True, help_text="e.g. trade_opened, guard_halt, error")
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.INFO)
    text = models.TextField()
    dedupe_key = models.CharField(
        max_length=191, unique=True, null=True, blank=True,
        help_text="Same key, one message: retries and repeated checks don't spam the chat",
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_error = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.topic}: {self.text[:60]}"
