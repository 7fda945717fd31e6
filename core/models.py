"""The audit trail: every change of state a person or a program asks for, with who, how and what."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """One change asked for: who (a user, or a label for a program or a Telegram user), through which channel, what
    action on which object, and the details. Written in the same transaction as the change; never edited."""

    class Channel(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "REST API"
        DASHBOARD = "dashboard", "Dashboard"
        COMMAND = "command", "Management command"
        TELEGRAM = "telegram", "Telegram"
        SYSTEM = "system", "System (automatic)"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+")
    actor_label = models.CharField(max_length=150, help_text="The user name, or who it was when no user (a command)")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}: {self.summary[:60]}"


class StoredDataClock(models.Model):
    """The demo's market-replay clock, one row (``core.market_clock``): active only when the setting
    STATARB_MARKET_CLOCK is "stored" (``make demo`` sets it). The served demo's workers, beat and web read the time
    from here instead of the machine's clock, and a periodic step moves it one bar through the stored candles until
    they run out. Paper accounts only: demo and real accounts refuse to trade on it."""

    moment = models.DateTimeField(help_text="The clock's time: the close of the newest stored bar the market shows")
    start = models.DateTimeField(help_text="Where the clock started")
    end = models.DateTimeField(help_text="Close of the newest stored bar: the clock stops here")
    bar = models.DurationField(help_text="How far one step moves the clock (one bar of the strategy's timeframe)")
    wall_seconds = models.FloatField(help_text="Seconds of wall time between two steps")
    stepped_at = models.DateTimeField(null=True, blank=True, help_text="Wall time of the last step")
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Wall time the stored data ran out")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "stored-data clock (demo)"

    def __str__(self) -> str:
        return f"stored-data clock at {self.moment:%Y-%m-%d %H:%M} UTC" + (" (ended)" if self.ended_at else "")

    @property
    def bars_done(self) -> int:
        return round((self.moment - self.start) / self.bar)

    @property
    def bars_total(self) -> int:
        return round((self.end - self.start) / self.bar)
