"""The risk layer's tables: limits, halts, guard events and daily PnL snapshots."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.db import TimeStampedModel, decimal_field
from core.market_clock import market_clock

# Accounts belong to the execution app, a floor above this one: they are named by string, never imported.
ACCOUNT_MODEL = "execution.ExchangeAccount"
PAIR_MODEL = "pairs.Pair"
# Bounds of the guard's durations (a larger one read as "never" ran the guard's dates past the year 9999, and each
# cycle failed for every account): a year, a year, a week.
MAX_COOLDOWN_MINUTES = 525_600
MAX_STALE_DATA_MINUTES = 525_600
MAX_ERROR_BURST_MINUTES = 10_080
QUEUE_MAX_LENGTH_DEFAULT = 200


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
    max_pair_notional = decimal_field(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Largest notional (both legs) one pair trade may open with; a bigger budget is cut to it",
    )
    # The guard adds or subtracts these durations to its clock: beyond the bounds a cycle's dates would overflow.
    consecutive_losses_cooldown_minutes = models.PositiveIntegerField(
        default=720, validators=[MaxValueValidator(MAX_COOLDOWN_MINUTES)],
        help_text="How long a consecutive-losses stop lasts, at most a year (0: until a person clears it)"
    )
    # Detectors of abnormal conditions; empty turns one off.
    stale_data_minutes = models.PositiveIntegerField(
        null=True, blank=True, default=150, validators=[MaxValueValidator(MAX_STALE_DATA_MINUTES)],
        help_text="Market data older than this (newest stored bar) is stale; at most a year (empty: off)"
    )
    heartbeat_stale_seconds = models.PositiveIntegerField(
        null=True, blank=True, default=300, help_text="A bot that has not beaten for this long is stale"
    )
    one_leg_seconds = models.PositiveIntegerField(
        null=True, blank=True, default=120, help_text="A trade holding only one leg for this long is abnormal"
    )
    leg_imbalance_pct = models.FloatField(
        null=True, blank=True, default=0.2, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Largest |y notional - |beta| x notional| / (y notional + x notional) of an open trade",
    )
    error_burst_count = models.PositiveIntegerField(
        null=True, blank=True, default=5, validators=[MinValueValidator(1)],
        help_text="This many rejected orders or API errors (at least 1; empty: off) within the window..."
    )
    error_burst_minutes = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(MAX_ERROR_BURST_MINUTES)],
        help_text="...of this many minutes (at most a week) is a burst")
    slippage_bps = models.FloatField(
        null=True, blank=True, default=50, validators=[MinValueValidator(0)],
        help_text="Largest fill price distance from the price the bot planned with, basis points",
    )
    balance_tolerance_pct = models.FloatField(
        null=True, blank=True, default=0.005, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Largest change of the exchange's equity that trades, fees and funding do not explain, "
                  "as a fraction of capital (demo and real accounts)",
    )
    queue_max_length = models.PositiveIntegerField(
        null=True, blank=True, default=QUEUE_MAX_LENGTH_DEFAULT,
        help_text="Largest number of tasks waiting on one Celery queue; the queues serve every account, so only the "
                  "system-wide row's value counts (an account's row may not set another)",
    )
    actions = models.JSONField(
        default=dict, blank=True,
        help_text="What each check does when it fires, e.g. {\"daily_loss\": \"halt_flatten\"}; "
                  "checks left out keep their default (see risk.policy.DEFAULT_ACTIONS)",
    )
    enabled = models.BooleanField(default=True)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from risk.policy import actions_problems

        if problems := actions_problems(self.actions):
            raise ValidationError({"actions": problems})
        # The guard reads the queues' limit from the system-wide row alone: a value on an account's row would be
        # shown and never enforced. The default is let through, as rows made without the form carry it.
        if self.account_id is not None and self.queue_max_length not in (None, QUEUE_MAX_LENGTH_DEFAULT):
            raise ValidationError({"queue_max_length": "the Celery queues serve every account: set their limit on "
                                                       "the system-wide row (no account), where the guard reads it"})

    def __str__(self) -> str:
        return f"limits for {self.account or 'all accounts'}"


class Halt(models.Model):
    """A stop of one account (or, account empty, of all), or of one pair of it, until it is cleared or its latch
    ends (``until``).

    Mode *reduce*: no new entries; exits and repairs go on. Mode *halt*: no entries and no signal exits but
    stop-losses, only what a person asks for and the repair of trades in flight; with ``flatten`` every open trade
    is closed first.
    """

    class Source(models.TextChoices):
        GUARD = "guard", "Guard"
        MANUAL = "manual", "By hand"
        BOT = "bot", "Bot (reconciliation)"
        TELEGRAM = "telegram", "Telegram"

    class Mode(models.TextChoices):
        REDUCE = "reduce", "Reducing (no new entries)"
        HALT = "halt", "Halted (no entries, no exits but stop-losses)"

    account = models.ForeignKey(ACCOUNT_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="halts")
    pair = models.ForeignKey(PAIR_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                             help_text="Only this pair is paused (no new entries of it)")
    source = models.CharField(max_length=8, choices=Source.choices)
    trigger = models.CharField(max_length=32, blank=True, db_index=True,
                             help_text="The limit or detector that raised it (empty: a person or the bot)")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.REDUCE)
    reason = models.CharField(max_length=500)
    flatten = models.BooleanField(default=False, help_text="Also close the open trades")
    until = models.DateTimeField(null=True, blank=True, db_index=True,
                                 help_text="The latch ends here (empty: until a person clears it)")
    breach_multiple = models.FloatField(
        null=True, blank=True,
        help_text="How many times its limit the breach was when the guard raised it: once cleared, the halt is raised "
                  "again only past this plus one limit (empty: not a measured limit)",
    )
    # The raiser's clock: the wall clock live, the bar time in a replay.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # PROTECT: who raised or cleared a halt outlives the user's account (deactivate users instead of deleting them).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    cleared_at = models.DateTimeField(null=True, blank=True, db_index=True)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "cleared_at"], name="halt_account_active_idx")]
        permissions = [("clear_halt", "Can clear a halt")]

    def __str__(self) -> str:
        # What it stops, in the words a trader reads on the phone: a pair's pause is not the account stopped, and
        # "reducing" still closes trades where "halted" doesn't.
        scope = self.account or "all accounts"
        if self.pair_id is not None:
            scope = f"pair {self.pair} of {scope}"
        state = "halted" if self.mode == self.Mode.HALT else "reduce-only"
        return f"{scope} {state}{' and flattening' if self.flatten else ''}: {self.reason}"

    def clean(self) -> None:
        # A new halt that ends before the market's clock would be recorded and never be in force.
        if self.pk is None and self.until is not None and self.until <= (now := market_clock().now()):
            raise ValidationError({"until": f"{self.until:%Y-%m-%d %H:%M} UTC is already past (the market's clock "
                                            f"is at {now:%Y-%m-%d %H:%M} UTC): the halt would never stop anything"})

    def is_active_at(self, now) -> bool:
        return self.cleared_at is None and (self.until is None or self.until > now)

    @property
    def is_active(self) -> bool:
        """In force now, by the wall clock (a replay asks ``is_active_at`` with its own)."""
        return self.is_active_at(timezone.now())


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
    created_at = models.DateTimeField(default=timezone.now, db_index=True, help_text="The guard's clock (a replay's "
                                      "bar time)")

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
    drawdown = models.FloatField(default=0, help_text="Ending equity below the peak, as a fraction of the peak")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "date"], name="pnl_account_date_uniq"),
            models.CheckConstraint(condition=Q(peak_equity__gte=models.F("ending_equity")), name="pnl_peak_gte_equity"),
        ]
        ordering = ["-date", "account_id"]


class AccountGuardState(models.Model):
    """What the guard remembers of an account between cycles: the equity peak and the last balances compared."""

    account = models.OneToOneField(ACCOUNT_MODEL, on_delete=models.CASCADE, related_name="guard_state")
    state = models.CharField(max_length=8, default="active", help_text="active, reducing or halted")
    equity = decimal_field(null=True, blank=True, help_text="Equity at the last cycle, marked to market")
    peak_equity = decimal_field(null=True, blank=True, help_text="Highest equity seen since the last reset")
    exchange_equity = decimal_field(null=True, blank=True, help_text="The exchange's equity at the last cycle")
    checked_at = models.DateTimeField(null=True, blank=True)
    live_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="Wall clock of the last scheduled cycle that checked the account (not one run "
                                         "by a bot after a trade, nor a replay's): the bots open no trade when it is "
                                         "too old (STATARB_GUARD_MAX_AGE_S)")

    def __str__(self) -> str:
        return f"guard state of {self.account}: {self.state}"
