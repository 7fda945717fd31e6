"""The execution layer's tables: accounts, signals, pair trades and their orders, fills, funding, heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, URLValidator
from django.db import models
from django.db.models import Q

from core.db import TimeStampedModel, decimal_field
from exchanges.endpoints import check_base_url
from execution import daily_totals
from execution.daily_totals import PairTradeQuerySet
from pairs.models import Instrument, Level, Pair


class ExchangeAccount(TimeStampedModel):
    """One exchange account with one bot. Credentials are never stored in plain text.

    Either name the environment variables that hold the key and secret (``api_key_env``/``api_secret_env``),
    or store them encrypted (``api_key_encrypted``/``api_secret_encrypted``, Fernet tokens made with
    STATARB_SECRETS_KEY). Environment variables win when both are set.
    """

    class Mode(models.TextChoices):
        PAPER = "paper", "Paper (simulated fills)"
        DEMO = "demo", "Exchange demo trading"
        REAL = "real", "Real money"

    class PositionMode(models.TextChoices):
        ONE_WAY = "one_way", "One-way"
        HEDGE = "hedge", "Hedge"

    name = models.CharField(max_length=64, unique=True)
    exchange = models.CharField(max_length=32, default="bybit", help_text="ccxt exchange id")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.PAPER)
    level = models.ForeignKey(Level, on_delete=models.PROTECT, related_name="accounts", help_text="Level it trades")
    capital = decimal_field(validators=[MinValueValidator(0)], help_text="Capital allotted to the bot, quote currency")
    per_trade_budget = decimal_field(
        validators=[MinValueValidator(0)], help_text="Notional per leg of one pair trade, quote currency"
    )
    max_concurrent_trades = models.PositiveIntegerField(default=5)
    leverage = decimal_field(default=1, validators=[MinValueValidator(1)])
    position_mode = models.CharField(max_length=8, choices=PositionMode.choices, default=PositionMode.ONE_WAY)
    base_url_override = models.CharField(
        max_length=200, blank=True, validators=[URLValidator(schemes=["http", "https"])],
        help_text="REST base URL instead of the exchange's default (regional domain or gateway)",
    )
    api_key_env = models.CharField(max_length=64, blank=True, help_text="Name of the env variable with the API key")
    api_secret_env = models.CharField(max_length=64, blank=True, help_text="Name of the env variable with the secret")
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_secret_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        permissions = [("halt_account", "Can halt, resume and flatten an account's trading")]

    def __str__(self) -> str:
        return f"{self.name} ({self.mode})"

    def clean(self) -> None:
        """The credential variables must carry the configured prefix (a name like SECRET_KEY would send the server's
        own secrets to the exchange), a base URL override must be on the allow-list, and what the bots can't trade
        (a venue without orders, hedge mode) or would lose track of (a venue changed under open trades) is refused."""
        errors = {}
        prefix = settings.STATARB_CREDENTIAL_ENV_PREFIX
        for field in ("api_key_env", "api_secret_env"):
            name = getattr(self, field)
            if name and not name.startswith(prefix):
                errors[field] = f"{name!r}: credential variables must start with {prefix!r}"
        from execution.account_checks import disable_refusal, level_refusal, venue_change_refusal  # read this module

        if self.level_id is not None and (refusal := level_refusal(self)):
            errors["level"] = refusal
        if refusal := disable_refusal(self):
            errors["enabled"] = refusal
        errors.update(venue_change_refusal(self))
        from exchanges.factory import TRADING_VENUES  # here: it loads ccxt, which a model import shouldn't

        if self.mode != self.Mode.PAPER and self.exchange not in TRADING_VENUES:
            # Saved, the account's every tick failed on it (its client is never built), its open trades unmanaged.
            errors.setdefault("exchange", f"{self.exchange!r}: a {self.mode} account trades on an exchange whose "
                                          f"orders are implemented: {', '.join(TRADING_VENUES)}")
        if self.position_mode != self.PositionMode.ONE_WAY:
            # Offered by the exchange, not by the bots: a demo or real account's every tick failed on it (its open
            # trades left with no exit or stop), and a paper account traded one-way while it read "hedge".
            errors["position_mode"] = ("the bots trade in one-way position mode only (one net position per symbol; "
                                       "prepare_account switches the exchange account to it)")
        if self.base_url_override:
            try:
                check_base_url(self.base_url_override)
            except ValidationError as exc:
                errors["base_url_override"] = exc.messages
        if errors:
            raise ValidationError(errors)

    @property
    def has_stored_credentials(self) -> bool:
        return bool(self.api_key_encrypted and self.api_secret_encrypted)

    @property
    def queue_name(self) -> str:
        """The Celery queue its bot runs on; one worker per queue keeps one account's orders in sequence."""
        return f"execution.account.{self.pk}"


class Signal(models.Model):
    """The spread rule's verdict for one pair at one closed bar. Written idempotently per (pair, bar)."""

    class Action(models.TextChoices):
        HOLD = "hold", "Hold"
        ENTER_LONG = "enter_long", "Enter long spread"
        ENTER_SHORT = "enter_short", "Enter short spread"
        EXIT = "exit", "Exit"
        STOP = "stop", "Stop"
        MAX_HOLDING = "max_holding", "Maximum holding time"

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="signals")
    timeframe = models.CharField(max_length=8, default="1h")
    bar_time = models.DateTimeField(help_text="Open time of the closed bar the signal is computed on")
    zscore = models.FloatField()
    spread = models.FloatField()
    hedge_ratio = models.FloatField(
        null=True, blank=True,
        help_text="Hedge ratio of the rolling fit the spread and z-score were computed with; the bot sizes both "
                  "legs with it (empty on signals written before it was recorded: the pair's is used then)",
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pair", "timeframe", "bar_time"], name="signal_pair_bar_uniq")]
        indexes = [models.Index(fields=["bar_time", "action"], name="signal_bar_action_idx")]
        ordering = ["-bar_time"]

    def __str__(self) -> str:
        return f"{self.pair_id} {self.bar_time:%Y-%m-%d %H:%M} z={self.zscore:.2f} {self.action}"


class SignalState(models.Model):
    """Where the spread rule stands for one pair: the state ``pairs.quant.spread_rule.step`` carries from bar to
    bar, persisted so the live signals continue exactly as the backtest would."""

    pair = models.OneToOneField(Pair, on_delete=models.CASCADE, related_name="signal_state")
    last_bar_time = models.DateTimeField(help_text="Open time of the last bar the rule was advanced on")
    bar_index = models.PositiveIntegerField(default=0, help_text="Bars the rule has seen for this pair")
    position = models.SmallIntegerField(default=0, help_text="-1 short spread, 0 flat, +1 long spread")
    entry_bar = models.IntegerField(default=-1)
    bars_held = models.PositiveIntegerField(default=0)
    cooldown = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.pair_id} at {self.last_bar_time:%Y-%m-%d %H:%M}: position {self.position}"


class PairTrade(TimeStampedModel):
    """A two-legged position in one pair on one account, driven through a persisted state machine.

    The state is written before every exchange call, so a restart knows what may have reached the exchange.
    """

    class Side(models.TextChoices):
        # What x does depends on the hedge ratio's sign (``side_label``): with a negative ratio both legs go one way.
        LONG_SPREAD = "long_spread", "Long spread (buy y)"
        SHORT_SPREAD = "short_spread", "Short spread (sell y)"

    class State(models.TextChoices):
        PLANNED = "planned", "Planned"
        OPENING = "opening", "Opening"
        OPEN = "open", "Open"
        CLOSING = "closing", "Closing"
        CLOSED = "closed", "Closed"
        FAILED = "failed", "Failed"
        UNWOUND = "unwound", "Unwound"

    ACTIVE_STATES = (State.PLANNED, State.OPENING, State.OPEN, State.CLOSING)
    FINAL_STATES = (State.CLOSED, State.FAILED, State.UNWOUND)

    class ExitReason(models.TextChoices):
        EXIT_SIGNAL = "exit_signal", "Exit signal"
        STOP = "stop", "Stop"
        MAX_HOLDING = "max_holding", "Maximum holding time"
        COINTEGRATION_BROKEN = "cointegration_broken", "Cointegration broken"
        LEVEL_CHANGED = "level_changed", "Pair left the account's level"
        GUARD_HALT = "guard_halt", "Guard halt"
        MANUAL = "manual", "Closed by hand"
        UNWOUND = "unwound", "Unwound after a failed leg"
        RECONCILED = "reconciled", "Found closed on the exchange"
        EXCHANGE = "exchange", "Closed by the exchange (liquidation, auto-deleveraging, delivery)"

    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="trades")
    pair = models.ForeignKey(Pair, on_delete=models.PROTECT, related_name="trades")
    entry_signal = models.ForeignKey(Signal, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    side = models.CharField(max_length=16, choices=Side.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PLANNED, db_index=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    hedge_ratio = models.FloatField()
    entry_zscore = models.FloatField(null=True, blank=True)
    exit_zscore = models.FloatField(null=True, blank=True)
    y_qty = decimal_field(help_text="Planned quantity of the y leg")
    x_qty = decimal_field(help_text="Planned quantity of the x leg")
    gross_notional = decimal_field(default=0, help_text="Both legs' planned notional at the planning prices")
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=24, choices=ExitReason.choices, blank=True)
    realised_pnl = decimal_field(null=True, blank=True, help_text="Both legs, net of fees and funding")
    fees = decimal_field(default=0, help_text="Fees paid: the opening orders' once open, every fill's once finished")
    funding = decimal_field(default=0, help_text="Funding received (+) or paid (-)")
    error = models.TextField(blank=True)
    close_requested_at = models.DateTimeField(null=True, blank=True, help_text="Someone asked to close it by hand")
    close_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    # Every write through the ORM (save, delete, update, bulk_create, bulk_update) refreshes the account's daily
    # totals of the days it touches, in its own transaction (execution.services.daily_totals).
    objects = PairTradeQuerySet.as_manager()

    class Meta:
        constraints = [
            # One trade per entry signal and account: a retried or doubled tick can never open a signal twice.
            models.UniqueConstraint(fields=["account", "entry_signal"], name="trade_account_signal_uniq"),
        ]
        indexes = [
            models.Index(fields=["account", "state"], name="trade_account_state_idx"),
            models.Index(fields=["closed_at"], name="trade_closed_at_idx"),
            # Covers the reporting reads (monitoring.selectors: day totals, exposure, equity): an account's
            # finished trades by closing time are read from this index alone, without the table's rows.
            models.Index(fields=["account", "closed_at", "state", "pair", "realised_pnl", "fees", "funding",
                                 "opened_at"], name="trade_report_cover_idx"),
            # The first opening of an account (a scope's default start) without reading its trades.
            models.Index(fields=["account", "opened_at"], name="trade_account_opened_idx"),
        ]
        ordering = ["-created_at"]
        permissions = [("close_trade", "Can close a trade by hand")]

    def __str__(self) -> str:
        return f"trade {self.pk} {self.pair_id} {self.side} {self.state}"

    @classmethod
    def from_db(cls, db, field_names, values):
        trade = super().from_db(db, field_names, values)
        if daily_totals.ROW_ATTNAMES <= set(field_names):  # a deferred field is read on save instead
            trade._stored_days = daily_totals.trade_days(trade)  # the days whose totals it is in, as stored
        return trade

    @property
    def side_label(self) -> str:
        """The side with what each leg does: x is sold for a long spread only when the hedge ratio is positive; with
        a negative one both legs are bought (or both sold), a bet on both rather than a hedge, and it says so."""
        long = self.side == self.Side.LONG_SPREAD
        y = "buy y" if long else "sell y"
        if not self.hedge_ratio:
            x = "no x"
        elif (self.hedge_ratio > 0) == long:
            x = "sell x"
        else:
            x = "buy x"
        same_way = self.hedge_ratio and self.hedge_ratio < 0
        return (f"{'Long' if long else 'Short'} spread ({y}, {x}"
                + (", both one way: hedge ratio < 0)" if same_way else ")"))

    def save(self, *args, **kwargs):
        daily_totals.save_keeping_totals(self, super().save, *args, **kwargs)

    def delete(self, *args, **kwargs):
        return daily_totals.delete_keeping_totals(self, super().delete, *args, **kwargs)


class DailyTradeTotals(models.Model):
    """One account's finished trades on one UTC day: those closed that day summed, and the parts of the day during
    which at least one was open (exposure). Derived, never edited: every ORM write of a trade recomputes the rows of
    the days it touches, in its transaction (``execution.daily_totals``); ``manage.py rebuild_daily_totals`` all.
    The reporting reads (monitoring.scope_totals) use it for the whole days of a scope."""

    account = models.ForeignKey(ExchangeAccount, on_delete=models.CASCADE, related_name="+")
    day = models.DateField(help_text="UTC day")
    trades = models.PositiveIntegerField(default=0, help_text="Finished trades with a result closed that day")
    wins = models.PositiveIntegerField(default=0)
    losses = models.PositiveIntegerField(default=0)
    gross_profit = decimal_field(default=0, help_text="Sum of the positive PnLs")
    gross_loss = decimal_field(default=0, help_text="Sum of the negative PnLs (<= 0)")
    pnl = decimal_field(default=0, help_text="Realised PnL, net of fees and funding")
    fees = decimal_field(default=0)
    funding = decimal_field(default=0, help_text="Funding received (+) or paid (-)")
    held_us = models.BigIntegerField(default=0, help_text="Sum of closed - opened, microseconds")
    held_trades = models.PositiveIntegerField(default=0, help_text="Trades of the day with an opening time")
    open_us = models.BigIntegerField(default=0, help_text="Microseconds of the day with a finished trade open")
    open_spans = models.JSONField(default=list, help_text="Those microseconds as merged [from, to) offsets from "
                                                          "the day's start, for combined views")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "day"], name="daily_trade_totals_uniq")]
        ordering = ["account", "day"]
        verbose_name_plural = "daily trade totals"

    def __str__(self) -> str:
        return f"{self.account_id} {self.day}: {self.trades} trades, {self.pnl}"


class Order(TimeStampedModel):
    """One order of one leg for one action of a trade; its client order id is deterministic (Bybit orderLinkId)."""

    class Leg(models.TextChoices):
        Y = "y", "y leg"
        X = "x", "x leg"

    class Action(models.TextChoices):
        OPEN = "open", "Open"
        CLOSE = "close", "Close"
        COMPLETE = "complete", "Complete a partly filled open"
        UNWIND = "unwind", "Unwind (reduce-only)"
        RECONCILE = "reconcile", "Adopted from the exchange's executions (orders not placed by the bot)"

    class Side(models.TextChoices):
        BUY = "buy", "Buy"
        SELL = "sell", "Sell"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned (not sent)"
        SUBMITTED = "submitted", "Submitted"
        PARTIALLY_FILLED = "partially_filled", "Partially filled"
        FILLED = "filled", "Filled"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected"
        UNKNOWN = "unknown", "Unknown (to reconcile)"

    trade = models.ForeignKey(PairTrade, on_delete=models.PROTECT, related_name="orders")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="orders")
    leg = models.CharField(max_length=1, choices=Leg.choices)
    action = models.CharField(max_length=9, choices=Action.choices)
    attempt = models.PositiveSmallIntegerField(
        default=1, help_text="A rejected or partly filled close is retried as attempt 2, 3, ... (a new client id)"
    )
    side = models.CharField(max_length=4, choices=Side.choices)
    order_type = models.CharField(max_length=8, default="market")
    qty = decimal_field(validators=[MinValueValidator(0)])
    limit_price = decimal_field(null=True, blank=True)
    reference_price = decimal_field(null=True, blank=True,
                                    help_text="The price the bot planned with (the latest close): slippage is the "
                                              "fill's distance from it")
    reduce_only = models.BooleanField(default=False)
    client_order_id = models.CharField(max_length=36, unique=True, help_text="Bybit orderLinkId (max 36 chars)")
    exchange_order_id = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLANNED, db_index=True)
    filled_qty = decimal_field(default=0)
    avg_price = decimal_field(null=True, blank=True)
    fee = decimal_field(default=0)
    planned_at = models.DateTimeField(null=True, blank=True, help_text="When the bot decided it (the bot's clock)")
    submitted_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trade", "leg", "action", "attempt"], name="order_trade_leg_action_uniq"),
            models.CheckConstraint(condition=Q(filled_qty__lte=models.F("qty")), name="order_filled_lte_qty"),
        ]
        ordering = ["trade_id", "created_at"]

    def __str__(self) -> str:
        return self.client_order_id


class Fill(models.Model):
    """One execution of an order, as the exchange (or the paper simulator) reported it."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    exchange_fill_id = models.CharField(max_length=64)
    qty = decimal_field(validators=[MinValueValidator(0)])
    price = decimal_field(validators=[MinValueValidator(0)])
    fee = decimal_field(default=0)
    fee_currency = models.CharField(max_length=16, default="USDT")
    is_maker = models.BooleanField(default=False)
    filled_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "exchange_fill_id"], name="fill_order_exec_uniq")]
        ordering = ["filled_at"]

    def __str__(self) -> str:
        return f"{self.exchange_fill_id} {self.qty}@{self.price}"


class FundingPayment(models.Model):
    """Funding settled on one leg's position; positive amounts were received, negative paid."""

    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="funding_payments")
    trade = models.ForeignKey(
        PairTrade, on_delete=models.PROTECT, null=True, blank=True, related_name="funding_payments"
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    settled_at = models.DateTimeField()
    rate = decimal_field()
    position_qty = decimal_field(help_text="Signed position size at settlement")
    mark_price = decimal_field(null=True, blank=True)
    amount = decimal_field()

    class Meta:
        constraints = [
            # Per trade: in one-way mode two trades sharing an instrument share the exchange position, and the
            # settlement is split between them.
            models.UniqueConstraint(
                fields=["account", "trade", "instrument", "settled_at"], name="funding_trade_instr_time_uniq"
            )
        ]
        # The bot reads an account's settlements since a time (what is recorded already): a range, not a scan.
        indexes = [models.Index(fields=["account", "settled_at"], name="funding_account_time_idx")]
        ordering = ["-settled_at"]

    def __str__(self) -> str:
        return f"funding {self.instrument_id} {self.settled_at:%Y-%m-%d %H:%M} {self.amount}"


class BotHeartbeat(models.Model):
    """The last sign of life of an account's bot; the guard raises an event when it goes stale."""

    account = models.OneToOneField(ExchangeAccount, on_delete=models.CASCADE, related_name="heartbeat")
    worker = models.CharField(max_length=200, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    beat_at = models.DateTimeField()
    status = models.CharField(max_length=200, blank=True)
    last_tick_ms = models.FloatField(null=True, blank=True)
    open_trades = models.PositiveIntegerField(default=0)
    # The lease is the lock that keeps a second bot of the same account from trading: taken and renewed by one
    # conditional UPDATE, it expires on its own when its holder dies.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    lease_generation = models.PositiveBigIntegerField(
        default=0, help_text="Fencing token: one more with every new lease; the holder's writes carry it"
    )
    reconciled_at = models.DateTimeField(null=True, blank=True, help_text="Last successful reconciliation")
    funding_synced_until = models.DateTimeField(null=True, blank=True, help_text="Funding recorded up to here")
    funding_unsynced_since = models.DateTimeField(
        null=True, blank=True,
        help_text="Start of a funding read that failed and has not been read since, or a settlement held through "
                  "that the exchange did not list yet (read again for an hour): trades closed after it may hold "
                  "funding that is not recorded yet",
    )

    def __str__(self) -> str:
        return f"{self.account} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


# The paper exchange's tables (its own module: this one would pass 500 lines); imported here for Django.
from execution.paper_models import PaperAccount, PaperFill, PaperFunding, PaperOrder, PaperPosition  # noqa: E402, F401
