"""The risk layer's tables: limits, halts, guard events and daily PnL snapshots."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.db import TimeStampedModel, decimal_field

# Accounts belong to the execution app, a floor above this one: they are named by string, never imported.
ACCOUNT_MODEL = "execution.ExchangeAccount"


class RiskLimit(TimeStampedModel):
    """Limits of one account, or the system-wide defaults when ``account`` is empty."""

    account = models.OneToOneField(
        ACCOUNT_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="risk_limit"
    )
    daily_loss_limit = decimal_field(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Halt when today's PnL falls below -this"
    )
    daily_loss_limit_pct = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Halt when today's PnL falls below -this fraction of starting equity",
    )
    max_drawdown_pct = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Halt when equity is this fraction below its peak",
    )
    max_open_trades = models.PositiveIntegerField(null=True, blank=True)
    max_gross_exposure = decimal_field(null=True, blank=True, validators=[MinValueValidator(0)])
    max_consecutive_losses = models.PositiveIntegerField(null=True, blank=True)
    flatten_on_halt = models.BooleanField(default=False, help_text="Close open trades when a halt is raised")
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"limits for {self.account or 'all accounts'}"


class Halt(models.Model):
    """A stop on opening new trades, for one account or (account empty) for all. Active until cleared."""

    class Source(models.TextChoices):
        GUARD = "guard", "Daily guard"
        MANUAL = "manual", "By hand"
        BOT = "bot", "Bot (reconciliation)"

    account = models.ForeignKey(ACCOUNT_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="halts")
    source = models.CharField(max_length=8, choices=Source.choices)
    reason = models.CharField(max_length=500)
    flatten = models.BooleanField(default=False, help_text="Also close the open trades")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    cleared_at = models.DateTimeField(null=True, blank=True, db_index=True)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "cleared_at"], name="halt_account_active_idx")]
        permissions = [("clear_halt", "Can clear a halt")]

    def __str__(self) -> str:
        scope = self.account or "all accounts"
        return f"halt of {scope}: {self.reason}"

    @property
    def is_active(self) -> bool:
        return self.cleared_at is None


class GuardEvent(models.Model):
    """Something the guard or a bot noticed: a limit hit, stale data, a dead bot, a failed reconciliation."""

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    account = models.ForeignKey(
        ACCOUNT_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="guard_events"
    )
    kind = models.CharField(max_length=48, db_index=True)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    message = models.CharField(max_length=1000)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind}: {self.message[:60]}"


class DailyPnlSnapshot(TimeStampedModel):
    """One account's day (UTC): equity at both ends and what moved it."""

    # History outlives nothing it describes: an account with halts, events or days of PnL is not deleted.
    account = models.ForeignKey(ACCOUNT_MODEL, on_delete=models.PROTECT, related_name="daily_pnl")
    date = models.DateField()
    starting_equity = decimal_field()
    ending_equity = decimal_field()
    realised_pnl = decimal_field(default=0)
    unrealised_pnl = decimal_field(default=0)
    fees = decimal_field(default=0)
    funding = decimal_field(default=0)
    trades_opened = models.PositiveIntegerField(default=0)
    trades_closed = models.PositiveIntegerField(default=0)
    peak_equity = decimal_field(help_text="Highest ending equity up to this day, for drawdown")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "date"], name="pnl_account_date_uniq"),
            models.CheckConstraint(condition=Q(peak_equity__gte=models.F("ending_equity")), name="pnl_peak_gte_equity"),
        ]
        ordering = ["-date", "account_id"]
