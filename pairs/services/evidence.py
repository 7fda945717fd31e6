"""Backtest evidence per pair: the trading statistics of the spread rule in and out of sample (the ladder grades on
them, ``ladder.services``).

Windows (all bars on the same grid as the screening, see ``pairs.selectors.price_window``):

Forward in time (issue #17): formation, then validation, then trading.

- **in sample**: the formation window (the screening window of the pair's latest test), z-scores from that test
  (hedge ratio, intercept, spread mean and std fitted on that same window: look-ahead by design, labelled so).
- **validation**: every bar *after* the formation window up to the grading's end (``validation_bars`` of them when
  the grading follows the screening, as the pipeline runs them), traded as the bots trade: the live signals'
  rolling z-score and hedge ratio (fitted on the ``zscore_window_bars`` before each bar) and the holding limit from
  the formation half-life. These bars took no part in selecting the pair, so selection bias doesn't flatter them;
  they are the only backtest evidence the grading weighs (``ladder``), and a level is earned on the traded rule.

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
from pairs.models import FundingRate, Instrument, Pair, PairStatistics, StrategyConfig
from pairs.quant.backtest import BacktestStatistics, Costs, backtest
from pairs.quant.fills import fill_opens
from pairs.quant.spread_rule import RuleParams, fixed_zscore, max_holding_bars, rolling_zscore_pairs
from pairs.quant.stationarity import adf_fixed_lag
from pairs.selectors import fill_bars, newest_bar, price_window

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
        .select_related("y_instrument", "x_instrument", "level", "last_run")
        .order_by("pk")
    )


def formation_end(pair: Pair, config: StrategyConfig, newest: datetime) -> datetime:
    """The last bar of the formation window that fitted ``pair``'s coefficients: its latest test's run's window
    end; for a pair never tested by a run (set by hand), ``validation_bars`` bars before ``newest``, where a run at
    ``newest`` would have ended it."""
    if pair.last_run is not None and pair.last_run.window_end is not None:
        return pair.last_run.window_end
    return newest - timedelta(milliseconds=timeframe_ms(config.timeframe)) * config.validation_bars


def backtest_windows(pairs: list[Pair], config: StrategyConfig, end: datetime | None
                     ) -> tuple[dict[int, dict], datetime | None]:
    """In-sample and validation statistics per pair id (``{pair_id: {window: stats}}``) and the newest bar graded
    (``end``, default the newest stored bar of the pairs' legs).

    Pairs are backtested in groups sharing a formation window (usually one: the latest run's), all pairs of a
    group at once: in sample on the formation window, validation on every bar after it up to ``end``."""
    results: dict[int, dict] = {p.pk: {} for p in pairs}
    newest = end or newest_bar(_legs(pairs), config.timeframe)
    if newest is None:
        return results, None
    bar = timedelta(milliseconds=timeframe_ms(config.timeframe))
    groups: dict[tuple[datetime, int], list[Pair]] = {}
    for pair in pairs:
        lookback = pair.last_run.lookback_bars if pair.last_run is not None else config.lookback_bars
        groups.setdefault((formation_end(pair, config, newest), lookback), []).append(pair)
    for (formed, lookback), group in groups.items():
        if formed > newest:  # tested on bars after the grading's end (a re-grade of the past): nothing to weigh
            continue
        for pair_id, stats in _in_sample(group, config, _legs_window(group, config, lookback, formed)).items():
            results[pair_id][PairStatistics.Window.IN_SAMPLE] = stats
        validation_bars = int((newest - formed) / bar)
        if validation_bars < 1:
            continue
        # The rolling fit of the first validation bar reads the zscore_window_bars before it (formation bars).
        warmup = config.zscore_window_bars
        window = _legs_window(group, config, warmup + validation_bars, newest)
        for pair_id, stats in _validation(group, config, window, warmup).items():
            results[pair_id][PairStatistics.Window.VALIDATION] = stats
    return results, newest


def _legs(pairs: list[Pair]) -> list[Instrument]:
    """The instruments of ``pairs``' legs, each once."""
    legs = {p.y_instrument_id: p.y_instrument for p in pairs} | {p.x_instrument_id: p.x_instrument for p in pairs}
    return list(legs.values())


def _legs_window(pairs: list[Pair], config: StrategyConfig, bars: int, end: datetime) -> PriceWindow:
    return price_window(instruments=_legs(pairs), timeframe=config.timeframe, bars=bars, end=end,
                        min_history_bars=None)


def _frozen_backtest(pairs: list[Pair], config: StrategyConfig, window: PriceWindow):
    """The rule on ``window`` with each pair's formation fit frozen (hedge ratio, intercept, spread mean and std)
    and the holding limit from its formation half-life: (pairs backtested, result, their spreads on ``window``)."""
    column = {iid: k for k, iid in enumerate(window.instrument_ids)}
    traded = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column
              and p.spread_std and p.spread_std > 0]
    if not traded:
        return traded, None, None
    params = rule_params(config)
    y = np.array([column[p.y_instrument_id] for p in traded])
    x = np.array([column[p.x_instrument_id] for p in traded])
    log_prices = np.log(window.closes)
    beta = np.array([p.hedge_ratio for p in traded])
    alpha = np.array([p.intercept for p in traded])
    mean = np.array([p.spread_mean or 0.0 for p in traded])
    std = np.array([p.spread_std for p in traded])
    z = fixed_zscore(log_prices[:, y], log_prices[:, x], beta, alpha, mean, std)
    holding = max_holding_bars(np.array([p.half_life_bars or np.nan for p in traded], dtype=float), params)
    funding = funding_rate_matrix(window)
    opens, slippage = execution_matrices(config, window)
    result = backtest(window.closes[:, y], window.closes[:, x], z, beta, params, costs(config),
                      window.times.as_unit("ms").asi8, funding[:, y], funding[:, x], max_holding_bars=holding,
                      opens_y=opens[:, y], opens_x=opens[:, x], slippage_y=slippage[:, y], slippage_x=slippage[:, x],
                      execution_delay_bars=config.execution_delay_bars)
    return traded, result, log_prices[:, y] - alpha - beta * log_prices[:, x]


def _in_sample(pairs: list[Pair], config: StrategyConfig, formation: PriceWindow) -> dict[int, dict]:
    """The formation window traded with the coefficients fitted on it (look-ahead by design, labelled so)."""
    traded, result, spreads = _frozen_backtest(pairs, config, formation)
    if not traded:
        return {}
    adf_stat, adf_p = adf_fixed_lag(spreads[-RECENT_ADF_BARS:], lags=1)
    window_start, window_end = formation.times[0].to_pydatetime(), formation.times[-1].to_pydatetime()
    results = {}
    for k, pair in enumerate(traded):
        stats = _stats_dict(result.statistics[k])
        stats.update(recent_adf_stat=finite(adf_stat[k]), recent_adf_pvalue=finite(adf_p[k]),
                     window_start=window_start, window_end=window_end)
        results[pair.pk] = stats
    return results


def _validation(pairs: list[Pair], config: StrategyConfig, window: PriceWindow, warmup: int) -> dict[int, dict]:
    """The bars after the formation window (``window`` without its first ``warmup`` bars), traded by the rule as the
    bots trade it: the rolling z-score and hedge ratio of the live signals (``rolling_zscore_pairs`` over the
    ``zscore_window_bars`` before each bar). Nothing of these bars chose the pair, so selection bias doesn't flatter
    them, and the level they earn is earned on the rule that is then traded."""
    column = {iid: k for k, iid in enumerate(window.instrument_ids)}
    traded = [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column]
    if not traded or window.bars <= warmup:
        return {}
    params = rule_params(config)
    y = np.array([column[p.y_instrument_id] for p in traded])
    x = np.array([column[p.x_instrument_id] for p in traded])
    rolling = rolling_zscore_pairs(np.log(window.closes), y, x, config.zscore_window_bars)
    rows = slice(warmup, None)
    holding = max_holding_bars(np.array([p.half_life_bars or np.nan for p in traded], dtype=float), params)
    funding = funding_rate_matrix(window)[rows]
    opens, slippage = (matrix[rows] for matrix in execution_matrices(config, window))
    closes = window.closes[rows]
    result = backtest(closes[:, y], closes[:, x], rolling.zscore[rows], rolling.hedge_ratio[rows], params,
                      costs(config), window.times.as_unit("ms").asi8[rows], funding[:, y], funding[:, x],
                      max_holding_bars=holding, opens_y=opens[:, y], opens_x=opens[:, x], slippage_y=slippage[:, y],
                      slippage_x=slippage[:, x], execution_delay_bars=config.execution_delay_bars)
    window_start, window_end = window.times[warmup].to_pydatetime(), window.times[-1].to_pydatetime()
    return {pair.pk: _stats_dict(result.statistics[k]) | {"window_start": window_start, "window_end": window_end}
            for k, pair in enumerate(traded)}


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
