"""Walk-forward evaluation of the whole selection pipeline on stored candles. Pure numpy: no Django, no ccxt.

The same pieces as the live pipeline, run over rolling periods on one (bars x symbols) matrix loaded once:
``screening.screen`` + ``merge_and_adjust`` + ``passing_directions`` + ``confirmation.confirm_candidates`` (the
selection service's decisions), ``spread_rule`` (z-scores and the rule), ``backtest.backtest`` (fills, costs,
funding) and ``grading.grade`` (the ladder).

Forward-in-time protocol, per period (``trade_start`` .. ``trade_end``, weekly by default), all in bar indices:

1. **Universe at formation end** (point in time): a symbol enters when its closes are finite on every bar of the
   formation window, it has at least ``min_history_bars`` bars of history up to the formation end (its first
   stored bar is early enough: a symbol listed later is left out until then), and its average 24-hour quote
   turnover over the last ``TURNOVER_DAYS`` days before the formation end is at least ``min_turnover_24h``
   (unknown turnover passes, as in ``pairs.selectors.universe_instruments``). Nothing after the formation end is
   read.
2. **Formation** = the screening window: the ``lookback_bars`` bars ending ``validation_bars`` bars before
   ``trade_start``. Engle-Granger on every ordered pair of the universe, then ONE direction per unordered pair
   (``screening.preferred_directions``: the lower p-value, then the more negative ADF statistic, then the lower y
   index, read from the formation window only) and Benjamini-Hochberg over those directions, each unordered pair
   counted once with its family p-value (``screening.family_pvalues``: twice the lower of its two p-values, which
   ``max_pvalue`` reads too); pass/half-life rules and the out-of-sample confirmation (held-out tail of the
   formation window and Johansen) as the selection service applies them. The directions that pass all of it are
   the **pool**.
3. **Validation**: the ``validation_bars`` bars strictly after the formation window, traded by the rule on the
   z-score the trading step uses (``traded_zscore``: ``rolling``, whose fit at each bar reads the
   ``zscore_window_bars`` bars before it, the last ones of the formation window at first; or ``frozen``, the
   formation fit's hedge ratio, intercept, spread mean and standard deviation). A level is earned on the rule that
   is then traded. Its trades are the only evidence of the grading: ``grading.grade`` from the bottom of the
   ladder with this backtest evidence, no live evidence, the formation q-value and half-life. A pair moves one
   rung per grading, so it reaches level 1 at most; levels that require live evidence are never reached by a
   backtest (as in production).
4. **Trading**: the bars ``trade_start`` .. ``trade_end`` (exclusive), every pool pair traded by the rule:
   z-scores ``rolling`` (the live signal's rolling OLS over the ``zscore_window_bars`` bars strictly before each
   bar) or ``frozen`` (the formation fit), the same as in validation. A position still open on the period's last
   bar is closed there (``end_of_data``), so a period's result depends on no bar after ``trade_end``.

Fills (validation and trading alike): the execution model of the evidence backtest and the replay
(``pairs.quant.fills``): a decision on bar t fills at the open of bar ``t + 1 + execution_delay_bars`` (the
market's ``open`` column; without one, the previous bar's close), each leg charged the slippage fraction
``params.costs().slippage_fractions`` of its reference bar (fixed ``slippage`` plus ``slippage_factor`` times the
bar's relative range, from the ``high``/``low`` columns, or volume share, from the turnover). A trade's ``exit_ms``
is its exit fill time.

Prices: NaN before a listing; the loader forward-fills short gaps. Bars after a symbol's last stored bar are
forward-filled here from the past only (a delisted leg is held flat at its last price).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from pairs.quant.backtest import Costs, Trades, backtest
from pairs.quant.confirmation import confirm_candidates
from pairs.quant.fills import check_delay
from pairs.quant.grading import GradingParams, LevelRule, PairEvidence, TradeEvidence, grade
from pairs.quant.screening import merge_and_adjust, passing_directions, screen
from pairs.quant.spread_rule import (
    MIN_ZSCORE_WINDOW_BARS,
    RuleParams,
    fixed_zscore,
    max_holding_bars,
    rolling_zscore_pairs,
)

MS_PER_DAY = 86_400_000
# Days of turnover averaged for the point-in-time universe filter.
TURNOVER_DAYS = 7
ZSCORE_MODES = ("rolling", "frozen")


@dataclass(frozen=True)
class WalkForwardParams:
    """One parameter point: the screening, the validation, the rule and the costs (``StrategyConfig``'s names)."""

    lookback_bars: int = 2000
    min_history_bars: int = 2000
    min_turnover_24h: float = 5_000_000.0
    max_pvalue: float = 0.05
    max_qvalue: float = 0.10
    confirmation_bars: int = 500
    confirmation_max_pvalue: float = 0.10
    min_half_life_bars: float = 2.0
    max_half_life_bars: float = 250.0
    validation_bars: int = 500
    entry_z: float = 2.0
    exit_z: float = 0.0
    stop_z: float = 4.0
    max_holding_half_lives: float = 3.0
    cooldown_bars: int = 24
    zscore_window_bars: int = 250
    trade_zscore: str = "rolling"
    taker_fee: float = 0.00055
    slippage: float = 0.0002
    default_funding_rate: float = 0.0001
    execution_delay_bars: int = 0
    slippage_model: str = "range"
    slippage_factor: float = 0.02
    slippage_reference_notional: float = 500.0

    def __post_init__(self) -> None:
        for name in ("lookback_bars", "min_history_bars", "confirmation_bars", "validation_bars", "cooldown_bars",
                     "zscore_window_bars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.lookback_bars < 100:
            raise ValueError(f"lookback_bars must be at least 100 for an Engle-Granger test, got {self.lookback_bars}")
        if self.confirmation_bars < 10:
            raise ValueError(f"confirmation_bars must be at least 10, got {self.confirmation_bars}")
        if self.validation_bars < 2:
            raise ValueError("validation_bars must be at least 2")
        if self.zscore_window_bars < MIN_ZSCORE_WINDOW_BARS:  # 0 or 1 bar has no spread: no trade, silently
            raise ValueError(f"zscore_window_bars must be at least {MIN_ZSCORE_WINDOW_BARS}, got "
                             f"{self.zscore_window_bars}")
        for name in ("max_pvalue", "max_qvalue", "confirmation_max_pvalue"):
            if not 0.0 <= getattr(self, name) <= 1.0:  # (NaN too) a p- or q-value above 1 passes every pair
                raise ValueError(f"{name} must be a probability from 0 to 1, got {getattr(self, name)!r}")
        if self.trade_zscore not in ZSCORE_MODES:
            raise ValueError(f"trade_zscore must be one of {', '.join(ZSCORE_MODES)}, got {self.trade_zscore!r}")
        self.rule_params()  # the rule checks its own thresholds
        self.costs()
        check_delay(self.execution_delay_bars)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(spec.name for spec in fields(cls))

    def with_values(self, values: dict) -> WalkForwardParams:
        """A copy with ``values`` replaced; ValueError naming an unknown key or a value of the wrong type."""
        unknown = sorted(set(values) - set(self.field_names()))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(self.field_names())})")
        converted = {}
        for name, value in values.items():
            kind = type(getattr(self, name))
            if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
                converted[name] = float(value)
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                converted[name] = value
            elif kind is str and isinstance(value, str):
                converted[name] = value
            else:
                raise ValueError(f"parameter {name} must be a {kind.__name__}, got {value!r}")
        return replace(self, **converted)

    def rule_params(self) -> RuleParams:
        return RuleParams(entry_z=self.entry_z, exit_z=self.exit_z, stop_z=self.stop_z,
                          max_holding_half_lives=self.max_holding_half_lives, cooldown_bars=self.cooldown_bars)

    def costs(self) -> Costs:
        return Costs(taker_fee=self.taker_fee, slippage=self.slippage, funding_rate=self.default_funding_rate,
                     slippage_model=self.slippage_model, slippage_factor=self.slippage_factor,
                     slippage_reference_notional=self.slippage_reference_notional)

    def screen_key(self) -> tuple:
        """The fields the formation screen depends on (screens are shared between points that agree on them)."""
        return (self.lookback_bars, self.min_history_bars, self.min_turnover_24h, self.max_pvalue, self.max_qvalue,
                self.confirmation_bars, self.confirmation_max_pvalue, self.min_half_life_bars,
                self.max_half_life_bars, self.validation_bars)

    def holdout_bars(self) -> int:
        """Held-out tail of the formation window, capped at a quarter of it as the selection service caps it."""
        return min(self.confirmation_bars, self.lookback_bars // 4)

    def history_bars(self) -> int:
        """Bars needed before a period's first traded bar."""
        return self.lookback_bars + self.validation_bars


@dataclass(frozen=True)
class Market:
    """Stored candles on one regular grid: ``times_ms`` (T,) bar open times, ``closes`` (T, N) with NaN where no
    bar is known (before a listing), ``turnover`` (T, N) quote turnover per bar (NaN: unknown). ``columns``: more
    (T, N) per-symbol matrices (opens, highs, lows, funding rates...) that ``pair_columns`` of ``run_walkforward``
    hands to ``backtest.backtest`` sliced like the closes."""

    times_ms: np.ndarray
    closes: np.ndarray
    turnover: np.ndarray
    symbols: list[str]
    bar_ms: int
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    filled: np.ndarray = field(init=False, repr=False)
    first_bar: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        closes = np.asarray(self.closes, dtype=np.float64)
        if closes.ndim != 2 or closes.shape != np.shape(self.turnover) or closes.shape[1] != len(self.symbols):
            raise ValueError("closes and turnover must be (bars, symbols) matrices matching the symbols")
        if np.shape(self.times_ms) != (closes.shape[0],):
            raise ValueError("times_ms must have one entry per bar")
        for name, values in self.columns.items():
            if np.shape(values) != closes.shape:
                raise ValueError(f"column {name} must be a (bars, symbols) matrix like the closes")
        if (closes[np.isfinite(closes)] <= 0).any():
            raise ValueError("closes must be positive")
        known = np.isfinite(closes)
        first = np.where(known.any(axis=0), known.argmax(axis=0), closes.shape[0])
        # Forward fill from the past only: the last known close of each symbol (NaN before its first bar).
        index = np.where(known, np.arange(closes.shape[0])[:, None], 0)
        np.maximum.accumulate(index, axis=0, out=index)
        filled = np.where(np.arange(closes.shape[0])[:, None] >= first, closes[index, np.arange(closes.shape[1])],
                          np.nan)
        object.__setattr__(self, "closes", closes)
        object.__setattr__(self, "filled", filled)
        object.__setattr__(self, "first_bar", first)

    def truncated(self, stop: int) -> Market:
        """The market as it was known before bar ``stop`` (for no-look-ahead checks)."""
        return Market(self.times_ms[:stop], self.closes[:stop], self.turnover[:stop], list(self.symbols), self.bar_ms,
                      {name: values[:stop] for name, values in self.columns.items()})


@dataclass(frozen=True)
class Period:
    """Bar indices of one period: formation [formation_start, formation_end), validation [formation_end,
    trade_start), trading [trade_start, trade_end)."""

    formation_start: int
    formation_end: int
    trade_start: int
    trade_end: int


@dataclass
class PeriodTrades:
    """What one parameter point did in one period: the pool's directions (symbol indices), their level and the
    trades of the trading bars (``pair`` indexes the pool; ``exit_ms`` = the exit fill time; ``fills``: the
    backtest's own trade columns, fill prices, slippage and exit reasons, bars counted from ``trade_start``)."""

    period: Period
    universe: np.ndarray
    y: np.ndarray
    x: np.ndarray
    level: np.ndarray
    pair: np.ndarray
    ret: np.ndarray
    exit_ms: np.ndarray
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    side: np.ndarray
    hedge_ratio: np.ndarray
    fills: Trades | None = None

    def trade_level(self) -> np.ndarray:
        return self.level[self.pair] if len(self.pair) else np.zeros(0, dtype=np.int64)


def periods(market: Market, *, start_bar: int, end_bar: int, every_bars: int, params: WalkForwardParams
            ) -> list[Period]:
    """Periods of ``every_bars`` traded bars from ``start_bar`` up to ``end_bar`` (exclusive; the last one may be
    shorter, at least 2 bars); ValueError when ``start_bar`` lacks the formation and validation history."""
    if every_bars < 2:
        raise ValueError("a period needs at least 2 bars")
    if start_bar < params.history_bars():
        raise ValueError(f"the first period needs {params.history_bars()} bars of history before it "
                         f"(lookback {params.lookback_bars} + validation {params.validation_bars}), "
                         f"only {start_bar} are stored")
    end_bar = min(end_bar, len(market.times_ms))
    result = []
    for trade_start in range(start_bar, end_bar - 1, every_bars):
        formation_end = trade_start - params.validation_bars
        result.append(Period(formation_end - params.lookback_bars, formation_end, trade_start,
                             min(trade_start + every_bars, end_bar)))
    return result


def universe_at(market: Market, formation_start: int, formation_end: int, params: WalkForwardParams) -> np.ndarray:
    """Column indices of the symbols selectable at ``formation_end`` from data before it only (module docstring)."""
    window = market.closes[formation_start:formation_end]
    complete = np.isfinite(window).all(axis=0)
    history = market.first_bar <= formation_end - max(params.min_history_bars, params.lookback_bars)
    day_bars = MS_PER_DAY // market.bar_ms
    recent = market.turnover[max(0, formation_end - TURNOVER_DAYS * day_bars):formation_end]
    with np.errstate(invalid="ignore"):
        known = np.isfinite(recent).any(axis=0)
        daily = np.nansum(recent, axis=0) / max(1, recent.shape[0]) * day_bars
        liquid = ~known | (daily >= params.min_turnover_24h)
    return np.flatnonzero(complete & history & liquid)


@dataclass(frozen=True)
class Formation:
    """The pool of one formation: directions (symbol indices) with their frozen formation fit."""

    universe: np.ndarray
    y: np.ndarray
    x: np.ndarray
    hedge_ratio: np.ndarray
    intercept: np.ndarray
    spread_mean: np.ndarray
    spread_std: np.ndarray
    half_life: np.ndarray
    qvalue: np.ndarray


def form(market: Market, period: Period, params: WalkForwardParams, *, processes: int = 1) -> Formation:
    """Screen the formation window of ``period`` and return the confirmed candidates (the pool); ``processes``:
    forked processes sharing the Engle-Granger blocks (``screening.screen``; results identical)."""
    universe = universe_at(market, period.formation_start, period.formation_end, params)
    empty = np.zeros(0)
    if len(universe) < 2:
        return Formation(universe, *(np.zeros(0, dtype=np.int64),) * 2, *(empty,) * 6)
    log_closes = np.log(market.closes[period.formation_start:period.formation_end, universe])
    result = merge_and_adjust([screen(log_closes, processes=processes)])
    passed, half_life_ok = passing_directions(result, max_pvalue=params.max_pvalue, max_qvalue=params.max_qvalue,
                                              min_half_life=params.min_half_life_bars,
                                              max_half_life=params.max_half_life_bars)
    confirmation = confirm_candidates(result, log_closes, np.flatnonzero(passed & half_life_ok),
                                      holdout_bars=params.holdout_bars(),
                                      max_pvalue=params.confirmation_max_pvalue)
    chosen = np.array(sorted(k for k, check in confirmation.items() if check.confirmed), dtype=np.int64)
    return Formation(
        universe=universe, y=universe[result.y_index[chosen]], x=universe[result.x_index[chosen]],
        hedge_ratio=result.hedge_ratio[chosen], intercept=result.intercept[chosen],
        spread_mean=result.spread_mean[chosen], spread_std=result.spread_std[chosen],
        half_life=result.half_life[chosen], qvalue=result.qvalue[chosen],
    )


def traded_zscore(market: Market, pool: Formation, rows: slice, params: WalkForwardParams
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(z-score, hedge ratio) of the pool's directions on ``rows`` as the period trades them
    (``params.trade_zscore``): the formation fit frozen, or the rolling fit over the ``zscore_window_bars`` before
    each bar (the live signals' rule), which needs that many bars before ``rows``. The validation that grades a
    direction and the trading after it use this one z-score, so a level is earned on the rule that is traded."""
    if params.trade_zscore == "frozen":
        log_prices = np.log(market.filled[rows])
        z = fixed_zscore(log_prices[:, pool.y], log_prices[:, pool.x], pool.hedge_ratio, pool.intercept,
                         pool.spread_mean, pool.spread_std)
        return z, pool.hedge_ratio
    window = params.zscore_window_bars
    first = rows.start - window
    if first < 0:
        raise ValueError(f"the rolling z-score needs {window} bars before bar {rows.start}")
    rolling = rolling_zscore_pairs(np.log(market.filled[first:rows.stop]), pool.y, pool.x, window)
    return rolling.zscore[window:], rolling.hedge_ratio[window:]


def _run_backtest(market: Market, pool: Formation, rows: slice, z: np.ndarray, hedge: np.ndarray,
                  params: WalkForwardParams, backtest_options: dict):
    """``backtest.backtest`` of the pool's directions on ``rows``, filled by the execution model (``_execution``).
    ``backtest_options`` pass through as keyword arguments, except ``pair_columns``: ``{argument: (market column,
    "y" or "x")}``, each handed over as that column's (rows, directions) slice of the y or x legs (e.g. funding)."""
    rule = params.rule_params()
    options = _execution(market, pool, rows, params)
    options.update((name, value) for name, value in backtest_options.items() if name != "pair_columns")
    for argument, (column, leg) in backtest_options.get("pair_columns", {}).items():
        options[argument] = market.columns[column][rows][:, pool.y if leg == "y" else pool.x]
    return backtest(market.filled[rows][:, pool.y], market.filled[rows][:, pool.x], z, hedge, rule, params.costs(),
                    market.times_ms[rows], max_holding_bars=max_holding_bars(pool.half_life, rule),
                    bar_ms=market.bar_ms, **options)


def _execution(market: Market, pool: Formation, rows: slice, params: WalkForwardParams) -> dict:
    """The fill model's arguments of ``backtest``: ``params.execution_delay_bars`` and, when the market has an
    ``open`` column, each leg's opens and the slippage fraction of each bar as a reference bar
    (``Costs.slippage_fractions``, the formula of the evidence backtest and the replay). Without opens: the previous
    bar's close and the fixed slippage (``backtest``'s defaults)."""
    options: dict = {"execution_delay_bars": params.execution_delay_bars}
    opens = market.columns.get("open")
    if opens is None:
        return options
    costs = params.costs()
    for leg, index in (("y", pool.y), ("x", pool.x)):
        def part(name: str, index=index):
            values = market.turnover if name == "turnover" else market.columns.get(name)
            return None if values is None else values[rows][:, index]

        options[f"opens_{leg}"] = part("open")
        options[f"slippage_{leg}"] = costs.slippage_fractions(part("open"), part("high"), part("low"),
                                                              part("turnover"))
    return options


def validate_and_grade(market: Market, period: Period, pool: Formation, params: WalkForwardParams,
                       ladder: list[LevelRule], grading: GradingParams, backtest_options: dict) -> np.ndarray:
    """Level of each pool direction from its validation trades only, on the z-score the period trades
    (``traded_zscore``); bottom level if none."""
    bottom = min(rule.number for rule in ladder)
    if len(pool.y) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = slice(period.formation_end, period.trade_start)
    z, hedge = traded_zscore(market, pool, rows, params)
    result = _run_backtest(market, pool, rows, z, hedge, params, backtest_options)
    no_live = TradeEvidence(0, None, None, None)
    levels = np.full(len(pool.y), bottom, dtype=np.int64)
    for k, stats in enumerate(result.statistics):
        evidence = PairEvidence(
            backtest=TradeEvidence(stats.trades, stats.win_rate, stats.profit_factor, stats.max_drawdown),
            live=no_live, qvalue=float(pool.qvalue[k]), half_life=float(pool.half_life[k]), consecutive_failures=0,
        )
        levels[k] = grade(None, ladder, evidence, grading).level
    return levels


def trade(market: Market, period: Period, pool: Formation, levels: np.ndarray, params: WalkForwardParams,
          backtest_options: dict) -> PeriodTrades:
    """Trade every pool direction over the period's trading bars; positions are closed on its last bar."""
    rows = slice(period.trade_start, period.trade_end)
    if len(pool.y) == 0:
        return _no_trades(period, pool, levels)
    z, hedge = traded_zscore(market, pool, rows, params)
    result = _run_backtest(market, pool, rows, z, hedge, params, backtest_options)
    trades = result.trades
    exit_bar = trades.exit_bar + period.trade_start
    return PeriodTrades(
        period=period, universe=pool.universe, y=pool.y, x=pool.x, level=levels, pair=trades.pair.astype(np.int64),
        ret=np.asarray(trades.ret, dtype=np.float64), exit_ms=np.asarray(trades.exit_fill_ms, dtype=np.int64),
        entry_bar=trades.entry_bar + period.trade_start, exit_bar=exit_bar, side=trades.side,
        hedge_ratio=trades.hedge_ratio, fills=trades,
    )


def _no_trades(period: Period, pool: Formation, levels: np.ndarray) -> PeriodTrades:
    none_i, none_f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return PeriodTrades(period, pool.universe, pool.y, pool.x, levels, none_i, none_f, none_i, none_i, none_i,
                        none_i, none_f)


def run_walkforward(
    market: Market, schedule: list[Period], points: list[WalkForwardParams], ladder: list[LevelRule], *,
    grading: GradingParams | None = None, backtest_options: dict | None = None, progress=None,
    screen_processes: int = 1,
) -> list[list[PeriodTrades]]:
    """``[point][period]`` results. Formation screens are shared between points with the same ``screen_key`` (and
    the same formation window), so a grid over rule parameters screens each period once; the screens are about
    nine tenths of a run's time (docs/BENCHMARKS.md), ``screen_processes`` forked processes share each."""
    if not ladder:
        raise ValueError("the ladder has no levels")
    grading = grading or GradingParams()
    options = dict(backtest_options or {})
    screens: dict[tuple, Formation] = {}
    results = []
    for point in points:
        per_period = []
        for period in schedule:
            own = _period_for(period, point)
            key = (point.screen_key(), own.formation_start, own.formation_end)
            if key not in screens:
                screens[key] = form(market, own, point, processes=screen_processes)
            pool = screens[key]
            levels = validate_and_grade(market, own, pool, point, ladder, grading, options)
            per_period.append(trade(market, own, pool, levels, point, options))
            if progress is not None:
                progress()
        results.append(per_period)
    return results


def _period_for(period: Period, params: WalkForwardParams) -> Period:
    """The schedule's trading bars with this point's own formation and validation lengths."""
    formation_end = period.trade_start - params.validation_bars
    start = formation_end - params.lookback_bars
    if start < 0:
        raise ValueError(f"a point with lookback {params.lookback_bars} + validation {params.validation_bars} bars "
                         f"needs more history before bar {period.trade_start}")
    return Period(start, formation_end, period.trade_start, period.trade_end)


def level_numbers(ladder: list[LevelRule]) -> list[int]:
    """Levels a backtest can reach: above the bottom, without live evidence (reports list these)."""
    bottom = min(rule.number for rule in ladder)
    return sorted(rule.number for rule in ladder if rule.number != bottom and not rule.requires_live_evidence)


def bars_between(market: Market, start_ms: int, end_ms: int) -> tuple[int, int]:
    """(first bar with open time >= start_ms, first bar with open time > end_ms)."""
    first = np.searchsorted(market.times_ms, start_ms, side="left")
    return int(first), int(np.searchsorted(market.times_ms, end_ms, side="right"))


def every_bars(market: Market, days: float) -> int:
    return max(2, math.floor(days * MS_PER_DAY / market.bar_ms))
