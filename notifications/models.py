"""The notification outbox: messages are written in the same transaction as what caused them, sent later.

A :class:`Notification` is what happened; a :class:`Delivery` is one message to one destination (a Telegram chat,
the e-mail recipients, the log), made in the same transaction from the routing (``notifications.routing``). The
sender (``notifications.sender``) claims deliveries with a lease, so two senders never send one row, and keeps each
destination's messages in order.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


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
        HELD = "held", "Held (kept, not sent: a replay without --notify)"

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


class Delivery(models.Model):
    """One notification to one destination. ``lease_owner``/``lease_until`` mark the sender holding it; only the
    oldest pending delivery of a destination is ever claimed, so a destination receives its messages in order (save
    a critical one, which passes those waiting for their topic's fold window: ``notifications.sender``)."""

    class Channel(models.TextChoices):
        TELEGRAM = "telegram", "Telegram"
        EMAIL = "email", "E-mail"
        LOG = "log", "Log"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FOLDED = "folded", "Folded into another message"
        FAILED = "failed", "Failed (gave up)"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = models.CharField(max_length=191, help_text="chat id, e-mail recipients or the logger's name")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    parts_sent = models.PositiveSmallIntegerField(
        default=0, help_text="parts of a long message already delivered; a retry goes on from the next one")
    maybe_sent = models.BooleanField(
        default=False, help_text="an earlier try may have arrived (a timeout after the request went out, or a sender "
                                 "that died holding it): the next one is marked as possibly a repeat")
    server_wait = models.BooleanField(
        default=False, help_text="the wait before the next try is the server's own (Telegram's 429 retry_after): "
                                 "nothing goes to this destination before it ends, a critical message included")
    folded_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="folded")
    last_error = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "channel", "target", "id"], name="notif_delivery_queue"),
            # The sends of the last seconds (a topic's fold window, a chat's spacing: every pass of every sender)
            # are read through this one; without it each read went through every delivery ever sent to the chat.
            models.Index(fields=["channel", "sent_at"], name="notif_delivery_recent_sends"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.target} #{self.notification_id} ({self.status})"
