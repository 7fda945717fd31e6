"""Per-pair trading statistics and the level graduation that follows each screening.

Windows (all bars on the same grid as the screening, see ``pairs.selectors.price_window``):

- **in sample**: the screening window (the last ``lookback_bars``), z-scores from the pair's latest test
  (hedge ratio, intercept, spread mean and std fitted on that same window: look-ahead by design, labelled so).
- **out of sample**: the ``backtest_oos_bars`` bars *before* the screening window, z-scores from a rolling fit
  over the ``zscore_window_bars`` bars strictly before each bar (walk-forward: nothing of a bar or later is used).
  These bars took no part in selecting the pair, so selection bias doesn't flatter them.
- **live**: the pair's own finished trades on paper, demo and real accounts.

The same rule (``pairs.quant.spread_rule``) with the same parameters (``SelectionConfig``) drives the backtests,
the replay and the live signals. Costs: taker fee and slippage on each of the four fills, funding at every
settlement on both legs at the stored rate of that settlement (``FundingRate``, fetched with the candles), or
``default_funding_rate`` where none is stored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.db import connection, transaction
from django.db.models import F, Sum

from execution.models import Fill, Order, PairTrade
from pairs.marketdata.validation import timeframe_ms
from pairs.models import FundingRate, Level, Pair, PairStatistics, SelectionConfig
from pairs.quant.backtest import BacktestStatistics, Costs, backtest
from pairs.quant.grading import GradingParams, LevelRule, PairEvidence, TradeEvidence, grade
from pairs.quant.performance import max_drawdown, trade_metrics
from pairs.quant.spread import half_life
from pairs.quant.spread_rule import RuleParams, fixed_zscore, max_holding_bars, rolling_zscore_pairs
from pairs.quant.stationarity import adf_fixed_lag
from pairs.selectors import price_window
from pairs.services.levels import pair_set_level

logger = logging.getLogger(__name__)

# Bars at the end of the in-sample window whose spread gets its own ADF ("is it still stationary lately?").
RECENT_ADF_BARS = 250
STATISTIC_FIELDS = ("trades", "win_rate", "profit_factor", "total_return", "mean_return", "max_drawdown", "sharpe",
                    "sortino", "expectancy", "avg_holding_bars")


def rule_params(config: SelectionConfig) -> RuleParams:
    return RuleParams(entry_z=config.entry_z, exit_z=config.exit_z, stop_z=config.stop_z,
                      max_holding_half_lives=config.max_holding_half_lives, cooldown_bars=config.cooldown_bars)


def costs(config: SelectionConfig) -> Costs:
    return Costs(taker_fee=config.taker_fee, slippage=config.slippage, funding_rate=config.default_funding_rate)


@dataclass
class GradedPair:
    pair: Pair
    previous_level: int | None
    level: int | None
    reason: str
    windows: dict[str, dict] = field(default_factory=dict)


@dataclass
class StatisticsOutcome:
    graded: list[GradedPair]
    duration_seconds: float
    window_end: datetime | None

    def as_json(self) -> dict:
        def window(stats: dict | None) -> dict | None:
            if stats is None:
                return None
            return {k: stats.get(k) for k in ("trades", "win_rate", "profit_factor", "total_return", "max_drawdown",
                                               "sharpe")}

        return {
            "window_end": self.window_end.strftime("%Y-%m-%dT%H:%M:%SZ") if self.window_end else None,
            "n_pairs": len(self.graded),
            "promoted": sum(1 for g in self.graded if _moved(g) > 0),
            "demoted": sum(1 for g in self.graded if _moved(g) < 0),
            "pairs": [
                {
                    "y": g.pair.y_instrument.symbol,
                    "x": g.pair.x_instrument.symbol,
                    "level": g.level,
                    "previous_level": g.previous_level,
                    "reason": g.reason,
                    "in_sample": window(g.windows.get(PairStatistics.Window.IN_SAMPLE)),
                    "out_of_sample": window(g.windows.get(PairStatistics.Window.OUT_OF_SAMPLE)),
                    "live": window(g.windows.get(PairStatistics.Window.LIVE)),
                }
                for g in self.graded
            ],
        }


def _moved(graded: GradedPair) -> int:
    """+1 promoted, -1 demoted, 0 otherwise (entering the ladder at its bottom is neither)."""
    if graded.previous_level is None or graded.level is None:
        return 0
    return (graded.level > graded.previous_level) - (graded.level < graded.previous_level)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _stats_dict(stats: BacktestStatistics) -> dict:
    values = stats.as_dict()
    return {k: (values[k] if k == "trades" else _finite(values[k])) for k in STATISTIC_FIELDS} | {
        # JSON and the database have no infinity: an unbounded profit factor is stored as None with trades > 0
        # and no loss; the grading reads the raw value.
        "profit_factor_raw": values["profit_factor"],
    }


def funding_rate_matrix(window) -> np.ndarray:
    """(bars x symbols) stored funding rates, each on the bar whose close it falls on or before (open < time <=
    close, as the backtest attributes settlements); NaN where none is stored, so the default rate applies."""
    rates = np.full(window.closes.shape, np.nan)
    if not len(window.times):
        return rates
    bar_ms = timeframe_ms(window.timeframe)
    first_open_ms = int(window.times.as_unit("ms").asi8[0])
    column = {iid: k for k, iid in enumerate(window.instrument_ids)}
    stored = FundingRate.objects.filter(
        instrument_id__in=window.instrument_ids,
        funding_time__gt=window.times[0].to_pydatetime(),
        funding_time__lte=window.times[-1].to_pydatetime() + timedelta(milliseconds=bar_ms),
    ).values_list("instrument_id", "funding_time", "rate")
    for instrument_id, funding_time, rate in stored:
        bar = -(-(int(funding_time.timestamp() * 1000) - first_open_ms) // bar_ms) - 1  # ceil, then the bar before
        if 0 <= bar < rates.shape[0]:
            rates[bar, column[instrument_id]] = float(rate)
    return rates


def gradable_pairs(config: SelectionConfig) -> list[Pair]:
    return list(
        Pair.objects.filter(timeframe=config.timeframe, y_instrument__exchange=config.exchange)
        .exclude(status=Pair.Status.RETIRED)
        .select_related("y_instrument", "x_instrument", "level")
        .order_by("pk")
    )


def _backtest_windows(pairs: list[Pair], config: SelectionConfig, end: datetime | None) -> tuple[dict, datetime]:
    """In-sample and out-of-sample statistics per pair id, computed for all pairs at once."""
    legs = {p.y_instrument_id: p.y_instrument for p in pairs} | {p.x_instrument_id: p.x_instrument for p in pairs}
    instruments = list(legs.values())
    lookback, oos, z_window = config.lookback_bars, config.backtest_oos_bars, config.zscore_window_bars
    full = price_window(instruments=instruments, timeframe=config.timeframe, bars=lookback + oos + z_window,
                        end=end, min_history_bars=None)
    recent = price_window(instruments=instruments, timeframe=config.timeframe, bars=lookback, end=end,
                          min_history_bars=None)
    params, fees = rule_params(config), costs(config)
    results: dict[int, dict] = {p.pk: {} for p in pairs}
    window_end = recent.times[-1].to_pydatetime() if len(recent.times) else None

    # In sample: the screening window with the latest test's coefficients.
    column = {iid: k for k, iid in enumerate(recent.instrument_ids)}
    in_sample = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column
                 and p.spread_std and p.spread_std > 0]
    if in_sample:
        y = np.array([column[p.y_instrument_id] for p in in_sample])
        x = np.array([column[p.x_instrument_id] for p in in_sample])
        log_prices = np.log(recent.closes)
        beta = np.array([p.hedge_ratio for p in in_sample])
        alpha = np.array([p.intercept for p in in_sample])
        mean = np.array([p.spread_mean or 0.0 for p in in_sample])
        std = np.array([p.spread_std for p in in_sample])
        z = fixed_zscore(log_prices[:, y], log_prices[:, x], beta, alpha, mean, std)
        holding = max_holding_bars(np.array([p.half_life_bars or np.nan for p in in_sample], dtype=float), params)
        funding = funding_rate_matrix(recent)
        result = backtest(recent.closes[:, y], recent.closes[:, x], z, beta, params, fees,
                          recent.times.as_unit("ms").asi8, funding[:, y], funding[:, x], max_holding_bars=holding)
        spreads = log_prices[:, y] - alpha - beta * log_prices[:, x]
        adf_stat, adf_p = adf_fixed_lag(spreads[-RECENT_ADF_BARS:], lags=1)
        for k, pair in enumerate(in_sample):
            stats = _stats_dict(result.statistics[k])
            stats.update(recent_adf_stat=_finite(adf_stat[k]), recent_adf_pvalue=_finite(adf_p[k]),
                         window_start=recent.times[0].to_pydatetime(), window_end=window_end)
            results[pair.pk][PairStatistics.Window.IN_SAMPLE] = stats

    # Out of sample: the bars before the screening window, walk-forward z-scores.
    column = {iid: k for k, iid in enumerate(full.instrument_ids)}
    walk = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column]
    if walk:
        y = np.array([column[p.y_instrument_id] for p in walk])
        x = np.array([column[p.x_instrument_id] for p in walk])
        traded = slice(z_window, z_window + oos)  # the OOS bars: after the first fit, before the screening window
        log_prices = np.log(full.closes[: z_window + oos])
        rolling = rolling_zscore_pairs(log_prices, y, x, z_window)
        # The holding limit needs a half-life known before the first traded bar: the one of the spread fitted on
        # the bars before it (the pair's latest half-life comes from later bars and would leak).
        first_fit = (rolling.hedge_ratio[z_window], rolling.intercept[z_window])
        prior_spreads = log_prices[:z_window, y] - first_fit[1] - first_fit[0] * log_prices[:z_window, x]
        holding = max_holding_bars(np.atleast_1d(half_life(prior_spreads)), params)
        funding = funding_rate_matrix(full)[traded]
        result = backtest(full.closes[traded][:, y], full.closes[traded][:, x], rolling.zscore[traded],
                          rolling.hedge_ratio[traded], params, fees, full.times[traded].as_unit("ms").asi8,
                          funding[:, y], funding[:, x], max_holding_bars=holding)
        for k, pair in enumerate(walk):
            stats = _stats_dict(result.statistics[k])
            stats.update(window_start=full.times[traded][0].to_pydatetime(),
                         window_end=full.times[traded][-1].to_pydatetime())
            results[pair.pk][PairStatistics.Window.OUT_OF_SAMPLE] = stats
    return results, window_end


def live_statistics(pairs: list[Pair]) -> dict[int, dict]:
    """Statistics of each pair's finished paper/demo/real trades: returns on the gross entry notional."""
    trades = (
        PairTrade.objects.filter(pair__in=pairs, state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False)
        .order_by("closed_at", "pk")
        .values_list("pk", "pair_id", "realised_pnl", "opened_at", "closed_at", "pair__timeframe")
    )
    notional = dict(
        Fill.objects.filter(order__trade__pair__in=pairs, order__action=Order.Action.OPEN)
        .values_list("order__trade_id")
        .annotate(total=Sum(F("qty") * F("price")))
        .values_list("order__trade_id", "total")
    )
    by_pair: dict[int, list[tuple[float, float]]] = {}
    for trade_id, pair_id, pnl, opened_at, closed_at, timeframe in trades:
        gross = float(notional.get(trade_id) or 0)
        if gross <= 0:
            continue
        held_ms = (closed_at - opened_at).total_seconds() * 1000 if opened_at and closed_at else np.nan
        by_pair.setdefault(pair_id, []).append((float(pnl) / gross, held_ms / timeframe_ms(timeframe)))
    stats = {}
    for pair_id, rows in by_pair.items():
        returns = np.array([r for r, _ in rows])
        metrics = trade_metrics(returns)
        stats[pair_id] = {
            "trades": metrics.trades, "win_rate": metrics.win_rate,
            "profit_factor": _finite(metrics.profit_factor), "profit_factor_raw": metrics.profit_factor,
            "total_return": metrics.total, "mean_return": metrics.mean,
            "max_drawdown": max_drawdown(np.concatenate([[1.0], 1.0 + np.cumsum(returns)])),
            "sharpe": None, "sortino": None, "expectancy": metrics.expectancy,
            "avg_holding_bars": _finite(np.nanmean([h for _, h in rows])) if rows else None,
        }
    return stats


def _evidence(stats: dict | None) -> TradeEvidence:
    if not stats:
        return TradeEvidence(0, None, None, None)
    return TradeEvidence(stats["trades"], stats.get("win_rate"), stats.get("profit_factor_raw"),
                         stats.get("max_drawdown"))


def _ladder() -> tuple[list[LevelRule], dict[int, Level]]:
    levels = list(Level.objects.all())
    rules = [
        LevelRule(level.number, level.requires_live_evidence, level.min_trades, level.min_win_rate,
                  level.min_profit_factor, level.max_drawdown, level.max_qvalue, level.min_half_life_bars,
                  level.max_half_life_bars)
        for level in levels
    ]
    return rules, {level.number: level for level in levels}


def pair_statistics_update(*, config: SelectionConfig, end: datetime | None = None) -> StatisticsOutcome:
    """Backtest every non-retired pair in and out of sample, collect its live results, store the statistics and
    move it on the ladder (audited); locked pairs keep their level."""
    started = time.monotonic()
    pairs = gradable_pairs(config)
    if not pairs:
        return StatisticsOutcome([], time.monotonic() - started, None)
    backtests, window_end = _backtest_windows(pairs, config, end)
    live = live_statistics(pairs)
    rules, levels = _ladder()
    params = GradingParams(hysteresis=config.grading_hysteresis,
                           max_consecutive_failures=config.max_consecutive_failures,
                           live_shortfall_margin=config.live_shortfall_margin, min_live_trades=config.min_live_trades)
    graded, moves = [], []
    for pair in pairs:
        windows = backtests[pair.pk]
        if pair.pk in live:
            windows[PairStatistics.Window.LIVE] = live[pair.pk]
        previous = pair.level.number if pair.level else None
        evidence = PairEvidence(
            backtest=_evidence(windows.get(PairStatistics.Window.OUT_OF_SAMPLE)),
            live=_evidence(windows.get(PairStatistics.Window.LIVE)),
            qvalue=pair.qvalue, half_life=pair.half_life_bars, consecutive_failures=pair.consecutive_failures,
        )
        decision = grade(previous, rules, evidence, params) if rules else None
        level, reason = previous, "no levels defined"
        if decision is not None:
            level, reason = decision.level, decision.reason
            if pair.level_locked:
                level, reason = previous, f"locked at L{previous} ({decision.reason})"
            elif decision.level != previous:
                moves.append((pair, levels[decision.level], decision.reason))
        graded.append(GradedPair(pair=pair, previous_level=previous, level=level, reason=reason, windows=windows))
    # The evidence and the moves it justifies are written together, or not at all.
    with transaction.atomic():
        _store_statistics(graded)
        for pair, level, reason in moves:
            pair_set_level(pair=pair, level=level, reason=reason)
    return StatisticsOutcome(graded, time.monotonic() - started, window_end)


_COLUMNS = (*STATISTIC_FIELDS, "recent_adf_stat", "recent_adf_pvalue", "window_start", "window_end")


@transaction.atomic
def _store_statistics(graded: list[GradedPair]) -> None:
    rows = []
    for g in graded:
        for window, stats in g.windows.items():
            rows.append(PairStatistics(pair=g.pair, window=window, **{k: stats.get(k) for k in _COLUMNS}))
    kwargs = {"update_conflicts": True, "update_fields": [*_COLUMNS, "computed_at"]}
    if connection.features.supports_update_conflicts_with_target:
        kwargs["unique_fields"] = ["pair", "window"]
    PairStatistics.objects.bulk_create(rows, batch_size=1000, **kwargs)
    # Windows a pair no longer has (e.g. its legs lost history) are removed rather than left stale.
    keep = {(g.pair.pk, w) for g in graded for w in g.windows}
    stale = [s.pk for s in PairStatistics.objects.filter(pair__in=[g.pair for g in graded])
             if (s.pair_id, s.window) not in keep]
    PairStatistics.objects.filter(pk__in=stale).delete()

