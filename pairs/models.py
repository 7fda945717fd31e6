"""The selection layer's tables: instruments and candles, cointegration runs, pairs, their statistics, levels."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.db import TimeStampedModel, decimal_field
from pairs.marketdata.validation import TIMEFRAME_MS
from pairs.quant.fills import MAX_EXECUTION_DELAY_BARS, SLIPPAGE_MODELS
from pairs.quant.spread_rule import MIN_ZSCORE_WINDOW_BARS, RuleParams


class Instrument(TimeStampedModel):
    """A tradable contract on one exchange, with the filters an order must respect."""

    class Kind(models.TextChoices):
        LINEAR_PERPETUAL = "linear_perpetual", "Linear perpetual"
        INVERSE_PERPETUAL = "inverse_perpetual", "Inverse perpetual"
        SPOT = "spot", "Spot"
        FUTURE = "future", "Dated future"

    class Status(models.TextChoices):
        TRADING = "trading", "Trading"
        PRELAUNCH = "prelaunch", "Pre-launch"
        SETTLING = "settling", "Settling"
        DELISTED = "delisted", "Delisted"

    exchange = models.CharField(max_length=32, help_text="ccxt exchange id, e.g. bybit")
    symbol = models.CharField(max_length=64, help_text="Exchange's own id, e.g. BTCUSDT")
    ccxt_symbol = models.CharField(max_length=64, blank=True, help_text="Unified ccxt symbol, e.g. BTC/USDT:USDT")
    base = models.CharField(max_length=32)
    quote = models.CharField(max_length=32)
    settle = models.CharField(max_length=32, blank=True)
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.LINEAR_PERPETUAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRADING, db_index=True)
    tick_size = decimal_field(null=True, blank=True)
    qty_step = decimal_field(null=True, blank=True)
    min_qty = decimal_field(null=True, blank=True)
    max_qty = decimal_field(null=True, blank=True)
    min_notional = decimal_field(null=True, blank=True)
    funding_interval_minutes = models.PositiveIntegerField(null=True, blank=True)
    turnover_24h = decimal_field(null=True, blank=True, help_text="Quote-currency turnover of the last 24h")
    listed_at = models.DateTimeField(null=True, blank=True)
    delisted_at = models.DateTimeField(null=True, blank=True)
    excluded = models.BooleanField(default=False, help_text="Left out of the universe by hand")
    exclusion_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="instrument_exchange_symbol_uniq")]
        ordering = ["exchange", "symbol"]

    def __str__(self) -> str:
        return f"{self.symbol}@{self.exchange}"


class Candle(models.Model):
    """One OHLCV bar; ``open_time`` is the bar's start in UTC. Written by bulk upsert, never row by row."""

    # No index of its own: the unique (instrument, timeframe, open_time) index serves the foreign key too, and
    # one index fewer makes the bulk upsert faster.
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="candles", db_index=False)
    timeframe = models.CharField(max_length=8, default="1h")
    open_time = models.DateTimeField()
    open = decimal_field()
    high = decimal_field()
    low = decimal_field()
    close = decimal_field()
    volume = decimal_field()
    turnover = decimal_field(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["instrument", "timeframe", "open_time"], name="candle_instrument_tf_time_uniq"
            ),
            models.CheckConstraint(condition=Q(high__gte=models.F("low")), name="candle_high_gte_low"),
            models.CheckConstraint(
                condition=Q(low__gt=0, open__gt=0, close__gt=0), name="candle_prices_positive"
            ),
        ]
        # The screening window reads (instrument, open time, close) of a range of bars: from this index alone, not
        # through the table, a row lookup each (#18: 500 symbols x 2,000 bars 4.2 s -> 0.6 to 1.1 s on MariaDB).
        indexes = [models.Index(fields=["instrument", "timeframe", "open_time", "close"],
                                name="candle_window_close_idx")]
        ordering = ["instrument", "timeframe", "open_time"]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.timeframe} {self.open_time:%Y-%m-%d %H:%M}"


class CointegrationRun(models.Model):
    """One screening of the universe: its parameters, size and outcome."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    exchange = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=8, default="1h")
    lookback_bars = models.PositiveIntegerField()
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    n_symbols = models.PositiveIntegerField(default=0)
    n_tests = models.PositiveIntegerField(default=0)
    n_passed = models.PositiveIntegerField(default=0)
    n_candidates = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"run {self.pk} {self.exchange} {self.timeframe} {self.status}"


FRACTION = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class Level(models.Model):
    """A rung of the graduation ladder. Thresholds are data so they can be tuned in the admin."""

    number = models.PositiveSmallIntegerField(unique=True)
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    traded = models.BooleanField(
        default=True, help_text="Accounts on this level open trades; off: its pairs are watched only (no account "
                                "may be put on it)"
    )
    trades_real_capital = models.BooleanField(
        default=False, help_text="Only on such a level may a real account trade (paper and demo accounts: any level)"
    )
    requires_live_evidence = models.BooleanField(
        default=False, help_text="Promotion needs paper or live trades, not only backtests"
    )
    min_trades = models.PositiveIntegerField(default=0)
    min_win_rate = models.FloatField(default=0.0, validators=FRACTION)
    min_profit_factor = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    max_drawdown = models.FloatField(default=1.0, validators=FRACTION,
                                     help_text="Largest tolerated drawdown, as a fraction (0.1 = 10%)")
    max_qvalue = models.FloatField(default=1.0, validators=FRACTION)
    min_half_life_bars = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    max_half_life_bars = models.FloatField(default=1e9, validators=[MinValueValidator(0.0)])
    capital_weight = decimal_field(default=0, validators=[MinValueValidator(0), MaxValueValidator(1)],
                                   help_text="Share of an account's budget a trade of this level gets")

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"L{self.number} {self.name}"

    def clean(self) -> None:
        if self.min_half_life_bars is not None and self.max_half_life_bars is not None and \
                self.min_half_life_bars > self.max_half_life_bars:
            raise ValidationError({"max_half_life_bars": f"{self.max_half_life_bars:g} is below the minimum "
                                                         f"half-life {self.min_half_life_bars:g}"})
        if self.trades_real_capital and not self.traded:
            raise ValidationError({"trades_real_capital": "a level that is not traded can't trade real capital"})
        if self.trades_real_capital and not self.requires_live_evidence:
            # The grading promotes to a level on what it requires: without live evidence, on the backtest alone.
            raise ValidationError({"requires_live_evidence": "a level that trades real capital requires live "
                                                             "evidence: a backtest alone never reaches real money"})


class Pair(TimeStampedModel):
    """An ordered pair: the spread is log(y) - hedge_ratio * log(x) - intercept."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        RETIRED = "retired", "Retired"

    y_instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="pairs_as_y")
    x_instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="pairs_as_x")
    timeframe = models.CharField(max_length=8, default="1h")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    level = models.ForeignKey(Level, on_delete=models.PROTECT, null=True, blank=True, related_name="pairs")
    level_locked = models.BooleanField(default=False, help_text="A person fixed this level; automation leaves it")
    level_changed_at = models.DateTimeField(null=True, blank=True)

    hedge_ratio = models.FloatField()
    intercept = models.FloatField(default=0.0)
    adf_stat = models.FloatField(null=True, blank=True)
    adf_lag = models.PositiveSmallIntegerField(null=True, blank=True)
    pvalue = models.FloatField(null=True, blank=True)
    qvalue = models.FloatField(null=True, blank=True)
    johansen_trace = models.FloatField(null=True, blank=True)
    johansen_passed = models.BooleanField(null=True, blank=True)
    half_life_bars = models.FloatField(null=True, blank=True)
    hurst = models.FloatField(null=True, blank=True)
    mean_crossings = models.PositiveIntegerField(null=True, blank=True)
    spread_mean = models.FloatField(null=True, blank=True)
    spread_std = models.FloatField(null=True, blank=True)
    screening_zscore = models.FloatField(
        null=True, blank=True, help_text="z of the spread at the end of the screening window (not the live z)"
    )
    return_correlation = models.FloatField(null=True, blank=True)

    last_run = models.ForeignKey(CointegrationRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_passed_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["y_instrument", "x_instrument", "timeframe"], name="pair_legs_uniq"),
            models.CheckConstraint(
                condition=~Q(y_instrument=models.F("x_instrument")), name="pair_legs_differ",
                violation_error_message="The y instrument and the x instrument must differ: a pair needs two legs."),
        ]
        indexes = [models.Index(fields=["level", "status"], name="pair_level_status_idx")]
        ordering = ["y_instrument__symbol", "x_instrument__symbol"]
        permissions = [("change_pair_level", "Can move a pair between levels and lock its level")]

    def __str__(self) -> str:
        return f"{self.y_instrument.symbol}/{self.x_instrument.symbol}"


class PairTest(models.Model):
    """A pair's result in one run, kept for passing pairs so its degradation over runs is visible."""

    run = models.ForeignKey(CointegrationRun, on_delete=models.CASCADE, related_name="tests")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="tests")
    hedge_ratio = models.FloatField()
    intercept = models.FloatField()
    adf_stat = models.FloatField()
    adf_lag = models.PositiveSmallIntegerField()
    pvalue = models.FloatField()
    qvalue = models.FloatField(null=True, blank=True)
    half_life_bars = models.FloatField(null=True, blank=True)
    hurst = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(default=False)
    confirmed_out_of_sample = models.BooleanField(null=True, blank=True)
    johansen_passed = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "pair"], name="pairtest_run_pair_uniq")]
        ordering = ["-run_id"]

    def __str__(self) -> str:
        return f"{self.pair_id} in run {self.run_id}: p={self.pvalue:.4f}"


class PairStatistics(models.Model):
    """Trading statistics of one pair over one window: backtest on its formation window (in sample) and on the
    validation bars after it, or its live trades."""

    class Window(models.TextChoices):
        IN_SAMPLE = "in_sample", "Backtest, formation window"
        # The bars after the formation window, traded as the bots trade them (rolling z-score): the only backtest
        # evidence the grading weighs (issue #17: forward in time, never a backcast).
        VALIDATION = "validation", "Backtest, validation after formation"
        LIVE = "live", "Live and paper trades"

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="statistics")
    window = models.CharField(max_length=16, choices=Window.choices)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    computed_at = models.DateTimeField(auto_now=True)
    trades = models.PositiveIntegerField(default=0)
    win_rate = models.FloatField(null=True, blank=True)
    profit_factor = models.FloatField(null=True, blank=True)
    total_return = models.FloatField(null=True, blank=True)
    mean_return = models.FloatField(null=True, blank=True)
    max_drawdown = models.FloatField(null=True, blank=True)
    sharpe = models.FloatField(null=True, blank=True)
    sortino = models.FloatField(null=True, blank=True)
    expectancy = models.FloatField(null=True, blank=True)
    avg_holding_bars = models.FloatField(null=True, blank=True)
    recent_adf_stat = models.FloatField(null=True, blank=True)
    recent_adf_pvalue = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pair", "window"], name="pairstats_pair_window_uniq")]
        verbose_name_plural = "pair statistics"

    def __str__(self) -> str:
        return f"{self.pair_id} {self.window}"

    @property
    def profit_factor_unbounded(self) -> bool:
        """Wins and no losing trade: the profit factor is +inf, stored as null (as is one with no trade or no win)."""
        return self.profit_factor is None and (self.win_rate or 0) > 0


class LevelChange(models.Model):
    """Audit of every level change, automatic or by hand."""

    # PROTECT: a pair's level history is audit; deleting the pair must not take it along.
    pair = models.ForeignKey(Pair, on_delete=models.PROTECT, related_name="level_changes")
    from_level = models.ForeignKey(Level, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    to_level = models.ForeignKey(Level, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    reason = models.CharField(max_length=500)
    # PROTECT: deleting a person must not turn their level changes into the system's (deactivate users instead).
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    automatic = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.pair_id}: {self.from_level_id} -> {self.to_level_id} ({self.reason})"

    @property
    def actor(self) -> str:
        return self.changed_by.get_username() if self.changed_by else "system"


class StrategyConfig(models.Model):
    """The strategy's parameters, one row, editable in the admin (``StrategyConfig.current()``): the universe and the
    screening, the ladder's grading, the spread rule and the costs the backtests charge. One row serves the
    selection, the backtests, the replay and the live signals, so they can't drift apart."""

    exchange = models.CharField(max_length=32, default="bybit", help_text="ccxt exchange id of the universe")
    quote = models.CharField(max_length=16, default="USDT", help_text="Settlement currency of the perpetuals")
    timeframe = models.CharField(max_length=8, default="1h")
    min_turnover_24h = decimal_field(
        default=5_000_000, help_text="Instruments below this 24h quote turnover are left out (unknown passes)"
    )
    min_history_bars = models.PositiveIntegerField(
        default=2000, help_text="Instruments with fewer stored bars in the screening window are left out"
    )
    backfill_bars = models.PositiveIntegerField(default=3000, help_text="Bars fetched for an instrument with none")
    lookback_bars = models.PositiveIntegerField(default=2000, help_text="Bars of the screening window")
    confirmation_bars = models.PositiveIntegerField(
        default=500,
        help_text="Last bars of the window held out: the hedge ratio is fitted before them and must hold on them",
    )
    max_pvalue = models.FloatField(default=0.05, validators=FRACTION,
                                   help_text="Engle-Granger p-value a direction must beat to pass")
    max_qvalue = models.FloatField(default=0.10, validators=FRACTION,
                                   help_text="Benjamini-Hochberg q-value over the run to pass")
    confirmation_max_pvalue = models.FloatField(
        default=0.10, validators=FRACTION,
        help_text="ADF p-value of the held-out spread (formation hedge ratio) to confirm",
    )
    min_half_life_bars = models.FloatField(default=2.0, validators=[MinValueValidator(0.0)])
    max_half_life_bars = models.FloatField(default=250.0, validators=[MinValueValidator(0.0)])
    candle_retention_days = models.PositiveIntegerField(default=400, help_text="Older candles are deleted")
    stale_after_bars = models.PositiveIntegerField(
        default=6, help_text="A symbol whose newest bar lags the universe's newest by more bars than this is stale"
    )
    retire_after_stale_bars = models.PositiveIntegerField(
        default=168, help_text="A pair whose leg has been stale this many bars is retired (168 h: a week)"
    )
    max_consecutive_failures = models.PositiveIntegerField(
        default=3, help_text="A pair failing this many screening runs in a row has lost its cointegration"
    )
    grading_hysteresis = models.FloatField(
        default=0.2, validators=[MinValueValidator(0.0), MaxValueValidator(0.99)],
        help_text="Demotion only when a level's thresholds fail by more than this fraction",
    )
    live_shortfall_margin = models.FloatField(
        default=0.3, validators=FRACTION,
        help_text="Demote when live profit factor or win rate is this fraction below the backtest's",
    )
    min_live_trades = models.PositiveIntegerField(
        default=10, help_text="Live/paper trades needed before live results are compared with the backtest"
    )
    # The spread rule: one set of parameters for the backtest, the replay and the live signals.
    entry_z = models.FloatField(default=2.0, help_text="Enter when |z| reaches this")
    exit_z = models.FloatField(default=0.0, help_text="Exit when z comes back to this (0: the mean)")
    stop_z = models.FloatField(default=4.0, help_text="Stop out when |z| reaches this against the position")
    max_holding_half_lives = models.FloatField(default=3.0, help_text="Close after this many half-lives")
    cooldown_bars = models.PositiveIntegerField(default=24, help_text="No new entry for this many bars after a stop")
    zscore_window_bars = models.PositiveIntegerField(
        # 250, not 500: chosen by the nested walk-forward on 2021-03-15..05-31, confirmed on 06-01..07-17 at 0 and
        # 1 bar of delay (docs/RESEARCH.md)
        default=250, help_text="Bars the rolling hedge ratio, mean and std of the z-score are fitted on"
    )
    validation_bars = models.PositiveIntegerField(
        # 500: the walk-forward evaluation's validation length (docs/RESEARCH.md)
        default=500, validators=[MinValueValidator(1)],
        help_text="Bars after the screening (formation) window on which a pair is traded as the bots trade it "
                  "(the rolling z-score): the screening window ends this many bars before the newest bar, and "
                  "these bars are the only backtest evidence for level 1",
    )
    taker_fee = models.FloatField(default=0.00055, validators=[MinValueValidator(0.0)],
                                  help_text="Per fill, fraction of notional (Bybit VIP0 taker)")
    slippage = models.FloatField(default=0.0002, validators=[MinValueValidator(0.0)],
                                 help_text="Per fill, fraction of notional")
    default_funding_rate = models.FloatField(
        default=0.0001, help_text="Funding rate per settlement when no rate is stored (longs pay shorts)"
    )
    # The execution model (pairs.quant.fills), the same in the backtests, the replay and the paper exchange.
    execution_delay_bars = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(MAX_EXECUTION_DELAY_BARS)],
        help_text="A decision on bar t fills at the open of bar t + 1 + this (0: the next bar's open)",
    )
    slippage_model = models.CharField(
        max_length=8, choices=[(m, m) for m in SLIPPAGE_MODELS], default="range",
        help_text="Variable slippage part: 'range' = factor x (high - low) / open, 'volume' = factor x reference "
                  "notional / turnover, both of the last bar closed at the fill",
    )
    slippage_factor = models.FloatField(
        default=0.02, validators=[MinValueValidator(0.0)],
        help_text="Factor of the variable slippage part (0: fixed slippage only)",
    )
    slippage_reference_notional = models.FloatField(
        default=500.0, validators=[MinValueValidator(1e-9)],
        help_text="Order size (quote currency) the 'volume' slippage model assumes, in every backtest and replay",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "strategy configuration"
        verbose_name_plural = "strategy configuration"

    def __str__(self) -> str:
        return f"strategy on {self.exchange} {self.quote} {self.timeframe}"

    def clean(self) -> None:
        """The spread rule's thresholds as the rule itself checks them (``RuleParams``), and a half-life range that
        holds something: a configuration the signals would refuse at every bar is refused here, by field."""
        errors = {}
        try:
            RuleParams(entry_z=self.entry_z, exit_z=self.exit_z, stop_z=self.stop_z,
                       max_holding_half_lives=self.max_holding_half_lives, cooldown_bars=self.cooldown_bars)
        except (TypeError, ValueError) as exc:
            field = next((f for f in ("entry_z", "stop_z", "exit_z", "max_holding_half_lives", "cooldown_bars")
                          if str(exc).startswith(f)), "entry_z")
            errors[field] = str(exc)
        if self.zscore_window_bars is not None and self.zscore_window_bars < MIN_ZSCORE_WINDOW_BARS:
            errors["zscore_window_bars"] = (f"{self.zscore_window_bars} bar(s) have no spread to fit: at least "
                                            f"{MIN_ZSCORE_WINDOW_BARS}")
        if self.timeframe not in TIMEFRAME_MS:  # every command and task would stop on it (ValueError)
            errors["timeframe"] = f"{self.timeframe!r} is not a timeframe: one of {', '.join(TIMEFRAME_MS)}"
        if self.min_half_life_bars is not None and self.max_half_life_bars is not None and \
                self.min_half_life_bars > self.max_half_life_bars:
            errors["max_half_life_bars"] = (f"{self.max_half_life_bars:g} is below the minimum half-life "
                                            f"{self.min_half_life_bars:g}")
        if (retention := self._retention_error()) is not None:
            errors["candle_retention_days"] = retention
        if errors:
            raise ValidationError(errors)

    def _retention_error(self) -> str | None:
        """The maintenance deletes candles older than ``candle_retention_days`` before the newest bar, at every
        grading: a retention shorter than the bars a screening reads (its universe's history up to the formation
        end, then the validation bars) deleted them, and no run found a symbol again (0, or 400 days of 4h bars)."""
        if self.timeframe not in TIMEFRAME_MS or None in (self.candle_retention_days, self.lookback_bars,
                                                          self.min_history_bars, self.validation_bars):
            return None
        needed_bars = max(self.lookback_bars, self.min_history_bars) + self.validation_bars
        needed_days = -(-needed_bars * TIMEFRAME_MS[self.timeframe] // 86_400_000)
        if self.candle_retention_days >= needed_days:
            return None
        return (f"{self.candle_retention_days} day(s) keep fewer {self.timeframe} candles than a screening reads: "
                f"max(lookback_bars, min_history_bars) + validation_bars = {needed_bars} bars, at least "
                f"{needed_days} days; the maintenance would delete the rest at the next grading")

    @classmethod
    def current(cls) -> StrategyConfig:
        config, _ = cls.objects.get_or_create(pk=1, defaults={"exchange": settings.STATARB_EXCHANGE})
        return config


class FundingRate(models.Model):
    """A funding settlement of a perpetual: at ``funding_time`` longs paid shorts ``rate`` x position value."""

    # The unique index below serves the foreign key too.
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="funding_rates", db_index=False)
    funding_time = models.DateTimeField()
    rate = decimal_field()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instrument", "funding_time"], name="fundingrate_instrument_time_uniq")
        ]
        ordering = ["instrument", "funding_time"]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.funding_time:%Y-%m-%d %H:%M} {self.rate}"
