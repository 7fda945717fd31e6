"""Reads of the selection layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Count, Max, Min, Q, QuerySet

from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, CointegrationRun, Instrument, Level, Pair, PairStatistics, SelectionConfig


def pairs_with_legs() -> QuerySet[Pair]:
    return Pair.objects.select_related("y_instrument", "x_instrument", "level")


def latest_screening_run() -> CointegrationRun | None:
    return CointegrationRun.objects.order_by("-started_at", "-pk").first()


def ladder_pairs(*, min_level: int = 1, limit: int = 50) -> list[dict]:
    """Pairs on a trading rung (level >= ``min_level``), highest first, with their out-of-sample statistics."""
    pairs = list(
        pairs_with_legs()
        .filter(level__number__gte=min_level)
        .exclude(status=Pair.Status.RETIRED)
        .order_by("-level__number", "qvalue")[:limit]
    )
    stats = {
        (s.pair_id, s.window): s
        for s in PairStatistics.objects.filter(pair__in=pairs)
    }
    return [
        {
            "pair": pair,
            "out_of_sample": stats.get((pair.pk, PairStatistics.Window.OUT_OF_SAMPLE)),
            "live": stats.get((pair.pk, PairStatistics.Window.LIVE)),
        }
        for pair in pairs
    ]


def level_counts() -> list[dict]:
    """Each level with how many active pairs it holds, in ladder order (levels with none included)."""
    counts = dict(
        Pair.objects.filter(status=Pair.Status.ACTIVE, level__isnull=False)
        .values_list("level_id")
        .annotate(n=Count("id"))
        .values_list("level_id", "n")
    )
    return [{"level": level, "pairs": counts.get(level.pk, 0)} for level in Level.objects.all()]


def universe_instruments(*, config: SelectionConfig) -> QuerySet[Instrument]:
    """Instruments the screen may use: trading, not excluded by hand, turnover at least the minimum (an instrument
    whose turnover is unknown, e.g. imported from files, passes). History is checked on the candle window."""
    return (
        Instrument.objects.filter(exchange=config.exchange, quote=config.quote, status=Instrument.Status.TRADING,
                                  excluded=False)
        .filter(Q(turnover_24h__isnull=True) | Q(turnover_24h__gte=config.min_turnover_24h))
        .order_by("symbol")
    )


@dataclass
class PriceWindow:
    """Close prices of a universe on a common grid: ``closes`` is (bars x symbols), float64, no NaN."""

    timeframe: str
    times: pd.DatetimeIndex
    symbols: list[str]
    instrument_ids: list[int]
    closes: np.ndarray
    excluded: dict[str, str] = field(default_factory=dict)  # symbol -> why it was left out
    filled_bars: dict[str, int] = field(default_factory=dict)  # symbol -> bars forward-filled


def candle_closes_frame(instrument_ids: list[int], timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
    """(instrument_id, open_time UTC, close float) of the candles in [start, end].

    Read with the database casting closes to double: building a Decimal for each of a few hundred thousand
    closes only to turn it into a float costs more than the query itself. The screen works in log prices, for
    which a double's 15-16 significant digits are exact enough; money and orders keep reading Decimals.
    """
    columns = ["instrument_id", "open_time", "close"]
    if not instrument_ids:
        return pd.DataFrame(columns=columns)
    quote = connection.ops.quote_name
    placeholders = ", ".join(["%s"] * len(instrument_ids))
    sql = (
        f"SELECT {quote('instrument_id')}, {quote('open_time')}, CAST({quote('close')} AS DOUBLE) "  # noqa: S608
        f"FROM {quote(Candle._meta.db_table)} WHERE {quote('instrument_id')} IN ({placeholders}) "
        f"AND {quote('timeframe')} = %s AND {quote('open_time')} >= %s AND {quote('open_time')} <= %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [*instrument_ids, timeframe, adapt(start), adapt(end)])
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
    if not frame.empty:
        # SQLite hands back text, MySQL naive datetimes; both are UTC.
        frame["open_time"] = pd.to_datetime(frame["open_time"], utc=True)
    return frame


# A gap longer than this many bars is not papered over: the symbol is left out of the window.
MAX_FORWARD_FILL_BARS = 6
# Nor a symbol with more of its window filled in than this share (or than MAX_FORWARD_FILL_BARS, for short
# windows): many small gaps mean a thin market, not exchange maintenance.
MAX_FILLED_FRACTION = 0.02


def price_window(
    *, instruments: list[Instrument], timeframe: str, bars: int, end: datetime | None = None,
    min_history_bars: int | None = None,
) -> PriceWindow:
    """The last ``bars`` bars (ending at ``end``, default the newest stored bar of the universe) on a regular grid.

    Grid rule: every ``timeframe`` step from the window's first to last bar. A symbol's missing bars (exchange
    maintenance) are forward-filled from its previous close when a gap is at most MAX_FORWARD_FILL_BARS long;
    a symbol with a longer gap, with more bars missing than MAX_FILLED_FRACTION of the window (at least
    MAX_FORWARD_FILL_BARS are tolerated), with fewer than
    ``min_history_bars`` bars of history up to the window's end, or with no bar at the window's start (listed
    later: short history) is left out, with the reason recorded.
    """
    step = pd.Timedelta(milliseconds=timeframe_ms(timeframe))
    by_id = {i.pk: i for i in instruments}
    candles = Candle.objects.filter(instrument_id__in=list(by_id), timeframe=timeframe)
    if end is None:
        end = candles.aggregate(newest=Max("open_time"))["newest"]
    window = PriceWindow(timeframe=timeframe, times=pd.DatetimeIndex([], tz="UTC"), symbols=[], instrument_ids=[],
                         closes=np.empty((0, 0)))
    if end is None:
        return window
    end_ts = pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end, tz="UTC")
    grid = pd.date_range(end=end_ts, periods=bars, freq=step)
    frame = candle_closes_frame(list(by_id), timeframe, grid[0].to_pydatetime(), grid[-1].to_pydatetime())
    # A bar at the window's start already proves `bars` of history; more than that is checked on the first bar.
    first_allowed = grid[-1] - step * (min_history_bars - 1) if min_history_bars and min_history_bars > bars else None
    first_bars = {}
    if first_allowed is not None:
        firsts = candles.values_list("instrument_id").annotate(first=Min("open_time"))
        first_bars = dict(firsts.values_list("instrument_id", "first"))
    columns, ids, symbols = [], [], []
    grouped = dict(tuple(frame.groupby("instrument_id"))) if not frame.empty else {}
    for instrument in sorted(instruments, key=lambda i: i.symbol):
        group = grouped.get(instrument.pk)
        if group is None:
            window.excluded[instrument.symbol] = "no candles in the window"
            continue
        series = pd.Series(group["close"].astype("float64").to_numpy(),
                           index=pd.DatetimeIndex(group["open_time"]).tz_convert("UTC")).reindex(grid)
        real = int(series.notna().sum())
        if pd.isna(series.iloc[0]):
            window.excluded[instrument.symbol] = "short history: no bar at the window start"
            continue
        if first_allowed is not None and pd.Timestamp(first_bars[instrument.pk]) > first_allowed:
            window.excluded[instrument.symbol] = f"short history: less than {min_history_bars} bars"
            continue
        filled = series.ffill(limit=MAX_FORWARD_FILL_BARS)
        if filled.isna().any():
            window.excluded[instrument.symbol] = f"a gap longer than {MAX_FORWARD_FILL_BARS} bars"
            continue
        if bars - real > max(MAX_FORWARD_FILL_BARS, MAX_FILLED_FRACTION * bars):
            window.excluded[instrument.symbol] = f"{bars - real} of {bars} bars missing in the window"
            continue
        if real < bars:
            window.filled_bars[instrument.symbol] = bars - real
        columns.append(filled.to_numpy())
        ids.append(instrument.pk)
        symbols.append(instrument.symbol)
    window.times = grid
    window.symbols = symbols
    window.instrument_ids = ids
    window.closes = np.column_stack(columns) if columns else np.empty((bars, 0))
    return window
