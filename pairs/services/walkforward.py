"""The walk-forward evaluation over stored candles (``manage.py walkforward``): loads the candles once, runs the
pure engine (``pairs.quant.walkforward``) for the current settings or each point of a grid, and reports
(``pairs.quant.walkforward_report``). It reads only: nothing is written to the database.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.threads import blas_thread_limit, blas_threads, screen_processes
from pairs.marketdata.grid import PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, Instrument, StrategyConfig
from pairs.quant.fills import fill_opens
from pairs.quant.grading import GradingParams
from pairs.quant.walkforward import (
    Market,
    WalkForwardParams,
    bars_between,
    every_bars,
    level_numbers,
    periods,
    run_walkforward,
)
from pairs.quant.walkforward_report import report
from pairs.selectors import candle_matrices, ladder_rules, walkforward_bounds
from pairs.services.evidence import funding_rate_matrix

# Stored funding rates reach the backtest per leg (NaN where none is stored: the default rate), as in the evidence.
# Opens, highs, lows and turnover reach it through the engine's fill model (``walkforward._execution``).
FUNDING_COLUMNS = {"funding_rate_y": ("funding", "y"), "funding_rate_x": ("funding", "x")}
# A grid larger than this is a typo or a job for a cluster, not for this command.
MAX_GRID_POINTS = 500


class WalkForwardError(ValueError):
    """Bad input to the walk-forward (dates, symbols, grid); the message names what was wrong."""


def walkforward_params(config: StrategyConfig, *, execution_delay_bars: int | None = None) -> WalkForwardParams:
    """The current settings as a walk-forward point (the validation length and the fill model's
    included; ``execution_delay_bars`` overrides the configuration's delay (WalkForwardError when out of range)."""
    names = set(WalkForwardParams.field_names()) & {f.name for f in StrategyConfig._meta.get_fields()}
    values = {name: getattr(config, name) for name in names}
    values["min_turnover_24h"] = float(values["min_turnover_24h"])
    if execution_delay_bars is not None:
        values["execution_delay_bars"] = execution_delay_bars
    try:
        return WalkForwardParams().with_values(values)
    except ValueError as exc:
        raise WalkForwardError(str(exc)) from None


def grid_points(path: Path, base: WalkForwardParams) -> tuple[list[WalkForwardParams], list[dict]]:
    """Points of a grid file (JSON, or YAML by its suffix): a list of objects, or ``{"points": [...]}``, each naming
    the parameters it changes from ``base``. WalkForwardError naming the file, the point and the problem."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise WalkForwardError(f"--grid {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error of either format is the user's file
        raise WalkForwardError(f"--grid {path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if isinstance(data, dict) and set(data) == {"points"}:
        data = data["points"]
    if not isinstance(data, list) or not data:
        raise WalkForwardError(
            f"--grid {path}: expected a non-empty list of parameter points (or {{\"points\": [...]}})")
    if len(data) > MAX_GRID_POINTS:
        raise WalkForwardError(f"--grid {path}: {len(data)} points, at most {MAX_GRID_POINTS}")
    points = []
    for k, point in enumerate(data):
        if not isinstance(point, dict):
            raise WalkForwardError(f"--grid {path}: point {k} is not an object of parameter values")
        try:
            points.append(base.with_values(point))
        except ValueError as exc:
            raise WalkForwardError(f"--grid {path}: point {k}: {exc}") from None
    return points, [dict(point) for point in data]


def universe_for_walkforward(config: StrategyConfig, symbols: list[str] | None) -> list[Instrument]:
    """Every instrument of the exchange and quote with stored candles, whatever its status today (the point-in-time
    filters are the engine's), except those excluded by hand; ``symbols`` must all be known."""
    instruments = list(Instrument.objects.filter(exchange=config.exchange, quote=config.quote, excluded=False)
                       .filter(pk__in=Candle.objects.filter(timeframe=config.timeframe).values("instrument_id"))
                       .order_by("symbol"))
    if symbols:
        known = {i.symbol: i for i in instruments}
        unknown = [s for s in symbols if s not in known]
        if unknown:
            raise WalkForwardError(f"--symbols: unknown symbol(s) {', '.join(unknown)} (no {config.timeframe} candles "
                                   f"of {config.exchange} {config.quote} stored)")
        instruments = [known[s] for s in dict.fromkeys(symbols)]
    if len(instruments) < 2:
        raise WalkForwardError(f"the walk-forward needs at least 2 symbols with stored {config.timeframe} candles, "
                               f"found {len(instruments)}")
    return instruments


@dataclass
class WalkForwardRun:
    data: dict
    market: Market
    n_periods: int
    n_points: int
    settings: dict


def walkforward_run(
    *, config: StrategyConfig, start: datetime | None, end: datetime | None, symbols: list[str] | None,
    points: list[WalkForwardParams] | None = None, point_values: list[dict] | None = None, every_days: float = 7.0,
    select_on: str = "levels", progress=None, backtest_options: dict | None = None,
) -> WalkForwardRun:
    """Load, run and report; ``points`` None: the current settings only."""
    points = points or [walkforward_params(config)]
    instruments = universe_for_walkforward(config, symbols)
    ladder = ladder_rules()
    if not ladder:
        raise WalkForwardError("the ladder has no levels (migrate first: the default levels come with it)")
    first, last = walkforward_bounds(instruments=instruments, timeframe=config.timeframe)
    bar = pd.Timedelta(milliseconds=timeframe_ms(config.timeframe))
    history = max(max(p.history_bars(), p.zscore_window_bars) for p in points)
    earliest = pd.Timestamp(first) + history * bar
    start_ts = earliest if start is None else pd.Timestamp(start)
    end_ts = pd.Timestamp(last) if end is None else min(pd.Timestamp(end), pd.Timestamp(last))
    if start_ts < earliest:
        raise WalkForwardError(f"--start {start_ts:%Y-%m-%d %H:%M} is too early: the first period needs {history} "
                               f"bars of history and the candles start at {pd.Timestamp(first):%Y-%m-%d %H:%M}; "
                               f"the earliest start is {earliest:%Y-%m-%d %H:%M} UTC")
    if start is not None and start_ts >= pd.Timestamp(last):
        where = "after" if start_ts > pd.Timestamp(last) else "at"
        raise WalkForwardError(f"--start {start_ts:%Y-%m-%d %H:%M} is {where} the last stored candle "
                               f"({pd.Timestamp(last):%Y-%m-%d %H:%M} UTC): nothing is left to trade; the latest "
                               f"start is {pd.Timestamp(last) - bar:%Y-%m-%d %H:%M} UTC")
    if end_ts <= start_ts:
        raise WalkForwardError(f"--end {end_ts:%Y-%m-%d %H:%M} is not after --start {start_ts:%Y-%m-%d %H:%M} "
                               f"(the candles end at {pd.Timestamp(last):%Y-%m-%d %H:%M} UTC)")
    market = load_market(config=config, instruments=instruments, start=start_ts - history * bar, end=end_ts)
    backtest_options = {"pair_columns": FUNDING_COLUMNS, **(backtest_options or {})}
    start_bar, end_bar = bars_between(market, int(start_ts.value // 1_000_000), int(end_ts.value // 1_000_000))
    try:
        schedule = periods(market, start_bar=start_bar, end_bar=end_bar, every_bars=every_bars(market, every_days),
                           params=points[0])
    except ValueError as exc:
        raise WalkForwardError(str(exc)) from None
    if not schedule:
        raise WalkForwardError("no period fits between --start and --end (a period needs at least 2 bars)")
    grading = GradingParams(hysteresis=config.grading_hysteresis,
                            max_consecutive_failures=config.max_consecutive_failures,
                            live_shortfall_margin=config.live_shortfall_margin, min_live_trades=config.min_live_trades)
    processes = screen_processes()
    with blas_thread_limit(blas_threads(pool=processes)):
        results = run_walkforward(market, schedule, points, ladder, grading=grading,
                                  backtest_options=backtest_options, progress=progress, screen_processes=processes)
    data = report(results, level_numbers(ladder), market.times_ms, market.bar_ms, select_on=select_on,
                  points=point_values if len(points) > 1 else None)
    data["execution"] = execution_settings(points[0])
    return WalkForwardRun(data=data, market=market, n_periods=len(schedule), n_points=len(points),
                          settings=asdict(points[0]))


def load_market(*, config: StrategyConfig, instruments: list[Instrument], start: pd.Timestamp, end: pd.Timestamp
                ) -> Market:
    """The stored candles of ``instruments`` from ``start`` to ``end`` as the engine's market: closes, turnover,
    and the columns of the fill model (opens, a missing one being the previous close as the evidence backtest
    fills them, ``fills.fill_opens``; highs; lows) and of the funding (stored rates, NaN: the default)."""
    bar = pd.Timedelta(milliseconds=timeframe_ms(config.timeframe))
    grid, candles = candle_matrices(instruments=instruments, timeframe=config.timeframe, start=start.to_pydatetime(),
                                    end=end.to_pydatetime())
    symbols = [i.symbol for i in instruments]
    funding = funding_rate_matrix(PriceWindow(timeframe=config.timeframe, times=grid, symbols=symbols,
                                              instrument_ids=[i.pk for i in instruments], closes=candles["close"]))
    return Market(grid.as_unit("ms").asi8, candles["close"], candles["turnover"], symbols,
                  int(bar / pd.Timedelta(milliseconds=1)),
                  {"open": fill_opens(candles["open"], candles["close"]), "high": candles["high"],
                   "low": candles["low"], "funding": funding})


def execution_settings(point: WalkForwardParams) -> dict:
    """The report's ``execution`` block: the fill model of the run's first point (every point's, unless the grid
    changes it)."""
    return {"fills": f"open of the bar {1 + point.execution_delay_bars} after the signal bar",
            "execution_delay_bars": point.execution_delay_bars, "taker_fee": point.taker_fee,
            "slippage": point.slippage, "slippage_model": point.slippage_model,
            "slippage_factor": point.slippage_factor,
            "slippage_reference_notional": point.slippage_reference_notional}


# --- HTML report ---------------------------------------------------------------------------------------------

_STAT_COLUMNS = ("trades", "win_rate", "profit_factor", "profit_factor_ci", "sharpe", "deflated_sharpe")
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}"
)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.3f}" if np.isfinite(value) else str(value)
    return html.escape(str(value))


def _rows(label: str, block: dict) -> list[str]:
    rows = [("pool", block["pool"])] + [(f"level {n}", s) for n, s in block["levels"].items()]
    return [f"<tr><td class=l>{html.escape(label)}</td><td class=l>{name}</td>"
            + "".join(f"<td>{_cell(stats[c])}</td>" for c in _STAT_COLUMNS) + "</tr>" for name, stats in rows]


def _execution_html(execution: dict | None) -> list[str]:
    if not execution:
        return []
    return [f"<p>Fills: {html.escape(execution['fills'])} (execution delay "
            f"<b>{execution['execution_delay_bars']} bar(s)</b>), taker fee {execution['taker_fee']:g} and "
            f"slippage {execution['slippage']:g} + {execution['slippage_factor']:g} x "
            f"{html.escape(execution['slippage_model'])} per fill.</p>"]


def report_html(data: dict, *, settings: dict | None = None, title: str = "Walk-forward evaluation") -> str:
    """A self-contained HTML page (no script, no external resource) of the walk-forward JSON."""
    head = "<tr><th>span</th><th>book</th>" + "".join(f"<th>{c}</th>" for c in _STAT_COLUMNS) + "</tr>"
    overall = data["overall"]
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Pool: every confirmed candidate of each formation; level n: the pairs graded to level n on their "
             "validation bars only. Profit factor '-' with trades means no losing trade (unbounded).</p>",
             *_execution_html(data.get("execution")),
             f"<h2>Overall</h2><table>{head}", *_rows("all periods", overall), "</table>"]
    if "pbo" in overall:
        nested = overall.get("nested") or {}
        detail = nested.get("pbo_detail") or {}
        cscv = (f" over {detail['points']} distinct points, {detail['n_splits']} blocks of {detail['block_days']} "
                f"days from {detail['first_day']} (the oldest {detail['dropped_days']} of {detail['days']} days left "
                f"out)" if detail else "")
        parts.append(f"<p>Probability of backtest overfitting (CSCV): {_cell(overall['pbo'])}{html.escape(cscv)}; "
                     f"nested selection on the {html.escape(str(nested.get('select_on')))} book, points chosen per "
                     f"period: {html.escape(str(nested.get('choices')))}.</p>")
    parts.append(f"<h2>Periods</h2><table>{head}")
    for period in data["periods"]:
        parts.extend(_rows(f"{period['trade_start']} .. {period['trade_end']}", period))
    parts.append("</table>")
    if settings:
        settings_rows = "".join(f"<tr><td class=l>{html.escape(k)}</td><td>{_cell(v)}</td></tr>"
                                for k, v in settings.items())
        parts.append(f"<h2>Settings (first point)</h2><table>{settings_rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
