"""Backtest evidence per pair: the trading statistics of the spread rule in and out of sample (the ladder grades on
them, ``ladder.services``).

Windows (all bars on the same grid as the screening, see ``pairs.selectors.price_window``):

- **in sample**: the screening window (the last ``lookback_bars``), z-scores from the pair's latest test
  (hedge ratio, intercept, spread mean and std fitted on that same window: look-ahead by design, labelled so).
- **out of sample**: the ``backtest_oos_bars`` bars *before* the screening window, z-scores from a rolling fit
  over the ``zscore_window_bars`` bars strictly before each bar (walk-forward: nothing of a bar or later is used).
  These bars took no part in selecting the pair, so selection bias doesn't flatter them.

The same rule (``pairs.quant.spread_rule``) with the same parameters (``StrategyConfig``) drives the backtests,
the replay and the live signals, and the same execution model (``pairs.quant.fills``): a decision on a bar's close
fills at the open of the bar ``1 + execution_delay_bars`` later. Costs: taker fee and slippage (fixed plus
``slippage_factor`` times the range or volume share of the last bar closed at the fill) on each of the four fills,
funding at every settlement on both legs at the stored rate of that settlement (``FundingRate``, fetched with the
candles), or ``default_funding_rate`` where none is stored.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
from django.db import connection, transaction

from pairs.marketdata.grid import PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.models import FundingRate, Pair, PairStatistics, StrategyConfig
from pairs.quant.backtest import BacktestStatistics, Costs, backtest
from pairs.quant.fills import fill_opens
from pairs.quant.spread import half_life
from pairs.quant.spread_rule import RuleParams, fixed_zscore, max_holding_bars, rolling_zscore_pairs
from pairs.quant.stationarity import adf_fixed_lag
from pairs.selectors import fill_bars, price_window

logger = logging.getLogger(__name__)

# Bars at the end of the in-sample window whose spread gets its own ADF ("is it still stationary lately?").
RECENT_ADF_BARS = 250
STATISTIC_FIELDS = ("trades", "win_rate", "profit_factor", "total_return", "mean_return", "max_drawdown", "sharpe",
                    "sortino", "expectancy", "avg_holding_bars")


def rule_params(config: StrategyConfig) -> RuleParams:
    return RuleParams(entry_z=config.entry_z, exit_z=config.exit_z, stop_z=config.stop_z,
                      max_holding_half_lives=config.max_holding_half_lives, cooldown_bars=config.cooldown_bars)


def costs(config: StrategyConfig) -> Costs:
    return Costs(taker_fee=config.taker_fee, slippage=config.slippage, funding_rate=config.default_funding_rate,
                 slippage_model=config.slippage_model, slippage_factor=config.slippage_factor,
                 slippage_reference_notional=config.slippage_reference_notional)


def execution_matrices(config: StrategyConfig, window: PriceWindow) -> tuple[np.ndarray, np.ndarray]:
    """(opens, slippage fractions), both (bars x symbols) in ``window``'s order: the fill prices of the execution
    model (``pairs.quant.fills``; a bar without a stored open opens at the previous close) and the slippage of a
    fill whose reference bar is that bar. Slice their columns as the closes' for ``backtest``'s ``opens_y``,
    ``opens_x``, ``slippage_y`` and ``slippage_x``."""
    bars = fill_bars(window)
    opens = fill_opens(bars.opens, window.closes)
    return opens, costs(config).slippage_fractions(opens, bars.highs, bars.lows, bars.turnover)


def finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _stats_dict(stats: BacktestStatistics) -> dict:
    values = stats.as_dict()
    return {k: (values[k] if k == "trades" else finite(values[k])) for k in STATISTIC_FIELDS} | {
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


def gradable_pairs(config: StrategyConfig) -> list[Pair]:
    return list(
        Pair.objects.filter(timeframe=config.timeframe, y_instrument__exchange=config.exchange)
        .exclude(status=Pair.Status.RETIRED)
        .select_related("y_instrument", "x_instrument", "level")
        .order_by("pk")
    )


def backtest_windows(pairs: list[Pair], config: StrategyConfig, end: datetime | None
                     ) -> tuple[dict[int, dict], datetime | None]:
    """In-sample and out-of-sample statistics per pair id (``{pair_id: {window: stats}}``), computed for all pairs
    at once, and the end of the screening window."""
    legs = {p.y_instrument_id: p.y_instrument for p in pairs} | {p.x_instrument_id: p.x_instrument for p in pairs}
    instruments = list(legs.values())
    lookback, oos, z_window = config.lookback_bars, config.backtest_oos_bars, config.zscore_window_bars
    full = price_window(instruments=instruments, timeframe=config.timeframe, bars=lookback + oos + z_window,
                        end=end, min_history_bars=None)
    recent = price_window(instruments=instruments, timeframe=config.timeframe, bars=lookback, end=end,
                          min_history_bars=None)
    results: dict[int, dict] = {p.pk: {} for p in pairs}
    window_end = recent.times[-1].to_pydatetime() if len(recent.times) else None
    for pair_id, stats in _in_sample(pairs, config, recent).items():
        results[pair_id][PairStatistics.Window.IN_SAMPLE] = stats
    for pair_id, stats in _out_of_sample(pairs, config, full).items():
        results[pair_id][PairStatistics.Window.OUT_OF_SAMPLE] = stats
    return results, window_end


def _in_sample(pairs: list[Pair], config: StrategyConfig, recent: PriceWindow) -> dict[int, dict]:
    """The screening window traded with the latest test's coefficients (look-ahead by design)."""
    column = {iid: k for k, iid in enumerate(recent.instrument_ids)}
    in_sample = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column
                 and p.spread_std and p.spread_std > 0]
    if not in_sample:
        return {}
    params = rule_params(config)
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
    opens, slippage = execution_matrices(config, recent)
    result = backtest(recent.closes[:, y], recent.closes[:, x], z, beta, params, costs(config),
                      recent.times.as_unit("ms").asi8, funding[:, y], funding[:, x], max_holding_bars=holding,
                      opens_y=opens[:, y], opens_x=opens[:, x], slippage_y=slippage[:, y], slippage_x=slippage[:, x],
                      execution_delay_bars=config.execution_delay_bars)
    spreads = log_prices[:, y] - alpha - beta * log_prices[:, x]
    adf_stat, adf_p = adf_fixed_lag(spreads[-RECENT_ADF_BARS:], lags=1)
    window_start, window_end = recent.times[0].to_pydatetime(), recent.times[-1].to_pydatetime()
    results = {}
    for k, pair in enumerate(in_sample):
        stats = _stats_dict(result.statistics[k])
        stats.update(recent_adf_stat=finite(adf_stat[k]), recent_adf_pvalue=finite(adf_p[k]),
                     window_start=window_start, window_end=window_end)
        results[pair.pk] = stats
    return results


def _out_of_sample(pairs: list[Pair], config: StrategyConfig, full: PriceWindow) -> dict[int, dict]:
    """The bars before the screening window, traded with walk-forward z-scores."""
    column = {iid: k for k, iid in enumerate(full.instrument_ids)}
    walk = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column]
    if not walk:
        return {}
    params = rule_params(config)
    z_window, oos = config.zscore_window_bars, config.backtest_oos_bars
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
    opens, slippage = (matrix[traded] for matrix in execution_matrices(config, full))
    result = backtest(full.closes[traded][:, y], full.closes[traded][:, x], rolling.zscore[traded],
                      rolling.hedge_ratio[traded], params, costs(config), full.times[traded].as_unit("ms").asi8,
                      funding[:, y], funding[:, x], max_holding_bars=holding, opens_y=opens[:, y],
                      opens_x=opens[:, x], slippage_y=slippage[:, y], slippage_x=slippage[:, x],
                      execution_delay_bars=config.execution_delay_bars)
    window_start, window_end = full.times[traded][0].to_pydatetime(), full.times[traded][-1].to_pydatetime()
    results = {}
    for k, pair in enumerate(walk):
        stats = _stats_dict(result.statistics[k])
        stats.update(window_start=window_start, window_end=window_end)
        results[pair.pk] = stats
    return results


_COLUMNS = (*STATISTIC_FIELDS, "recent_adf_stat", "recent_adf_pvalue", "window_start", "window_end")


@transaction.atomic
def pair_statistics_store(windows_by_pair: dict[Pair, dict[str, dict]]) -> None:
    """Write each pair's statistics (``{pair: {window: stats}}``), replacing what was stored for those pairs."""
    rows = []
    for pair, windows in windows_by_pair.items():
        for window, stats in windows.items():
            rows.append(PairStatistics(pair=pair, window=window, **{k: stats.get(k) for k in _COLUMNS}))
    kwargs = {"update_conflicts": True, "update_fields": [*_COLUMNS, "computed_at"]}
    if connection.features.supports_update_conflicts_with_target:
        kwargs["unique_fields"] = ["pair", "window"]
    PairStatistics.objects.bulk_create(rows, batch_size=1000, **kwargs)
    # Windows a pair no longer has (e.g. its legs lost history) are removed rather than left stale.
    keep = {(pair.pk, w) for pair, windows in windows_by_pair.items() for w in windows}
    stale = [s.pk for s in PairStatistics.objects.filter(pair__in=list(windows_by_pair))
             if (s.pair_id, s.window) not in keep]
    PairStatistics.objects.filter(pk__in=stale).delete()
