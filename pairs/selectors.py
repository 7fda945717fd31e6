"""Reads of the selection layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
from django.db import connection
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from pairs.marketdata.grid import LEAD_BARS, BarGrid, PriceWindow, empty_window, grid_window
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, CointegrationRun, Instrument, Level, Pair, PairStatistics, StrategyConfig
from pairs.quant.walkforward import MS_PER_DAY, TURNOVER_DAYS
from pairs.window_reads import EPOCH_SECONDS_SQL, grid_block, grid_rows

if TYPE_CHECKING:
    import pandas as pd


def pairs_with_legs() -> QuerySet[Pair]:
    return Pair.objects.select_related("y_instrument", "x_instrument", "level")


def latest_screening_run() -> CointegrationRun | None:
    return CointegrationRun.objects.order_by("-started_at", "-pk").first()


def ladder_pairs(*, min_level: int = 1, limit: int = 50) -> list[dict]:
    """Pairs on a trading rung (level >= ``min_level``), highest first, with their validation statistics."""
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
            "validation": stats.get((pair.pk, PairStatistics.Window.VALIDATION)),
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


def universe_instruments(*, config: StrategyConfig, at: datetime | None = None) -> list[Instrument]:
    """Instruments the screen may use, by symbol; history is checked on the candle window.

    Live (``at`` None): trading today, not excluded by hand, 24-hour turnover of today's ticker at least the minimum.
    At a past moment ``at`` (a replay, a selection re-run on history): point in time, from data up to ``at`` only
    (issue #17): any status today (a symbol delisted since was trading then; one not yet listed has no candles
    and fails the history check), and the turnover filter on the average 24-hour quote turnover of the stored
    candles over the ``TURNOVER_DAYS`` days ending with the bar at ``at``, as the walk-forward computes it. An
    instrument whose turnover is unknown (imported from files without it) passes in both cases."""
    instruments = universe_candidates(config=config)
    if at is None:
        return list(instruments.filter(status=Instrument.Status.TRADING)
                    .filter(Q(turnover_24h__isnull=True) | Q(turnover_24h__gte=config.min_turnover_24h))
                    .order_by("symbol"))
    candidates = list(instruments.order_by("symbol"))
    daily = turnover_24h_at([i.pk for i in candidates], config.timeframe, at=at)
    minimum = float(config.min_turnover_24h)
    return [i for i in candidates if daily.get(i.pk) is None or daily[i.pk] >= minimum]


def candle_fetch_instruments(*, config: StrategyConfig) -> list[Instrument]:
    """The instruments whose bars the market-data fetch brings in, by symbol: the live universe, and the legs of the
    active pairs whatever their turnover or exclusion today (the pairs' signals, and the exit of a trade open on
    one, read their bars), and of the suspended pairs, whatever set the status (maintenance suspends a pair for a
    stale leg and fresh bars are what resumes it; a trade open on a suspended pair still needs its exit). An
    instrument the exchange no longer trades is not asked for."""
    active = {"status__in": (Pair.Status.ACTIVE, Pair.Status.SUSPENDED), "timeframe": config.timeframe}
    legs = (Instrument.objects.filter(exchange=config.exchange, status=Instrument.Status.TRADING)
            .filter(Q(pk__in=Pair.objects.filter(**active).values("y_instrument"))
                    | Q(pk__in=Pair.objects.filter(**active).values("x_instrument"))))
    instruments = {i.pk: i for i in universe_instruments(config=config)}
    instruments.update((i.pk, i) for i in legs if i.pk not in instruments)
    return sorted(instruments.values(), key=lambda i: i.symbol)


def universe_candidates(*, config: StrategyConfig) -> QuerySet[Instrument]:
    """Every instrument a point-in-time universe can hold: the exchange and quote's, whatever its status today,
    except those excluded by hand."""
    return Instrument.objects.filter(exchange=config.exchange, quote=config.quote, excluded=False)


def turnover_24h_at(instrument_ids: list[int], timeframe: str, *, at: datetime) -> dict[int, float]:
    """Average 24-hour quote turnover per instrument over the ``TURNOVER_DAYS`` days of bars ending with the bar
    that opens at ``at``, as ``pairs.quant.walkforward.universe_at`` computes it: each bar's stored turnover, or
    close x volume where none is stored (candle files carry volume only), missing bars counting as zero, the
    average over the days; an instrument with no bar there is absent (unknown)."""
    bar_ms = timeframe_ms(timeframe)
    bars = TURNOVER_DAYS * MS_PER_DAY // bar_ms
    since = at - timedelta(milliseconds=bar_ms * (bars - 1))
    quote_turnover = Coalesce("turnover", F("close") * F("volume"))
    rows = (Candle.objects.filter(instrument_id__in=instrument_ids, timeframe=timeframe, open_time__gte=since,
                                  open_time__lte=at)
            .order_by().values("instrument_id").annotate(total=Sum(quote_turnover))
            .values_list("instrument_id", "total"))
    return {instrument_id: float(total) / bars * (MS_PER_DAY // bar_ms) for instrument_id, total in rows}


def candle_closes_frame(instrument_ids: list[int], timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
    """(instrument_id, open_time UTC, close float) of the candles in [start, end].

    Read with the database casting closes to double: building a Decimal for each of a few hundred thousand
    closes only to turn it into a float costs more than the query itself. The screen works in log prices, for
    which a double's 15-16 significant digits are exact enough; money and orders keep reading Decimals.
    """
    return _candles_as_doubles(instrument_ids, timeframe, start, end, ["close"])


def price_window(
    *, instruments: list[Instrument], timeframe: str, bars: int, end: datetime | None = None,
    min_history_bars: int | None = None, processes: int = 1,
) -> PriceWindow:
    """The last ``bars`` bars (ending at ``end``, default the newest stored bar of the universe) on the regular grid
    of ``timeframe``, after the grid rules of ``pairs.marketdata.grid`` (forward fill of short gaps, exclusions);
    with ``min_history_bars``, a symbol with fewer bars of history up to the window's end is left out too.
    ``processes``: forked processes sharing the read of the closes (``window_reads.grid_block``)."""
    step = timedelta(milliseconds=timeframe_ms(timeframe))
    by_id = {i.pk: i for i in instruments}
    candles = Candle.objects.filter(instrument_id__in=list(by_id), timeframe=timeframe)
    if end is None:
        end = _newest_open_time(list(by_id), timeframe)
    if end is None:
        return empty_window(timeframe)
    # Built without pandas (a screening never needs the DatetimeIndex; ``PriceWindow.times`` makes it on demand).
    grid = BarGrid.ending(end, step_s=int(step.total_seconds()), bars=bars)
    ordered = sorted(instruments, key=lambda i: i.symbol)
    # Read with the LEAD_BARS before the window: a window starting in a gap is filled from them (grid rules).
    with_lead = BarGrid.ending(end, step_s=grid.step_s, bars=bars + LEAD_BARS)
    block = grid_block(ordered, timeframe, with_lead, processes=processes)
    lead, block = block[:LEAD_BARS], block[LEAD_BARS:]
    # A bar at the window's start already proves `bars` of history; more than that is checked on the first bar.
    short = None
    if min_history_bars and min_history_bars > bars:
        first_allowed = grid.time(-1) - step * (min_history_bars - 1)
        firsts = dict(candles.values_list("instrument_id").annotate(first=Min("open_time"))
                      .values_list("instrument_id", "first"))
        reason = f"short history: less than {min_history_bars} bars"
        short = [reason if i.pk in firsts and _utc(firsts[i.pk]) > first_allowed else None for i in ordered]
    return grid_window(timeframe=timeframe, times=grid, block=block, symbols=[i.symbol for i in ordered],
                       instrument_ids=[i.pk for i in ordered], short_history=short, lead=lead)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def newest_open_times(*, timeframe: str, instrument_ids: list[int] | None = None, until: datetime | None = None
                      ) -> dict[int, datetime]:
    """Each instrument's newest stored bar (at or before ``until``), by instrument id; instruments without one are
    left out. A MAX over all candles read every stored candle's index entry (1.0 s for 500 symbols on MariaDB; the
    guard's stale-data check ran one every replayed bar, #18). Here each instrument costs a seek of the unique
    (instrument, timeframe, open_time) index: MariaDB's loose index scan of a GROUP BY (its dependent subquery with
    a bound on open_time walks the instrument's whole range instead), elsewhere one ordered subquery per
    instrument (SQLite's GROUP BY reads every entry)."""
    if connection.vendor == "mysql":
        candles = Candle.objects.filter(timeframe=timeframe)
        if instrument_ids is not None:
            candles = candles.filter(instrument_id__in=instrument_ids)
        if until is not None:
            candles = candles.filter(open_time__lte=until)
        return dict(candles.order_by().values("instrument_id").annotate(newest=Max("open_time"))
                    .values_list("instrument_id", "newest"))
    candles = Candle.objects.filter(instrument_id=OuterRef("pk"), timeframe=timeframe)
    if until is not None:
        candles = candles.filter(open_time__lte=until)
    instruments = Instrument.objects.all() if instrument_ids is None else Instrument.objects.filter(
        pk__in=instrument_ids)
    rows = instruments.annotate(newest=Subquery(candles.order_by("-open_time").values("open_time")[:1]))
    return {pk: newest for pk, newest in rows.order_by().values_list("pk", "newest") if newest is not None}


def _newest_open_time(instrument_ids: list[int], timeframe: str) -> datetime | None:
    """The newest stored bar of these instruments."""
    if not instrument_ids:
        return None
    return max(newest_open_times(timeframe=timeframe, instrument_ids=instrument_ids).values(), default=None)


@dataclass(frozen=True)
class FillBars:
    """What the execution model (``pairs.quant.fills``) reads besides the closes, on a window's grid and columns:
    (bars x symbols) opens, highs, lows and turnover (quote volume; volume x close where the exchange gave none).
    NaN where no bar is stored (a forward-filled bar: its open is the previous close, its range and volume 0)."""

    opens: np.ndarray
    highs: np.ndarray
    lows: np.ndarray
    turnover: np.ndarray


def fill_bars(window: PriceWindow) -> FillBars:
    """The opens, highs, lows and turnover of ``window``'s bars, in its row and column order."""
    import pandas as pd

    shape = window.closes.shape
    matrices = [np.full(shape, np.nan) for _ in range(4)]
    if not shape[0] or not shape[1]:
        return FillBars(*matrices)
    frame = _candle_bars_frame(list(window.instrument_ids), window.timeframe, window.times[0].to_pydatetime(),
                               window.times[-1].to_pydatetime())
    if not frame.empty:
        first_ns, step_ns = int(window.times.as_unit("ns").asi8[0]), int(timeframe_ms(window.timeframe)) * 1_000_000
        offsets = pd.DatetimeIndex(frame["open_time"]).as_unit("ns").asi8 - first_ns
        on_grid = offsets % step_ns == 0
        rows = offsets[on_grid] // step_ns
        column = {iid: k for k, iid in enumerate(window.instrument_ids)}
        columns = frame["instrument_id"].map(column).to_numpy()[on_grid]
        turnover = frame["turnover"].to_numpy(dtype=float)
        turnover = np.where(np.isnan(turnover), frame["volume"].to_numpy(dtype=float)
                            * frame["close"].to_numpy(dtype=float), turnover)
        for matrix, values in zip(matrices, (frame["open"].to_numpy(dtype=float), frame["high"].to_numpy(dtype=float),
                                             frame["low"].to_numpy(dtype=float), turnover), strict=True):
            matrix[rows, columns] = values[on_grid]
    return FillBars(*matrices)


def _candle_bars_frame(instrument_ids: list[int], timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
    """(instrument_id, open_time UTC, open, high, low, close, volume, turnover as doubles) of the candles in
    [start, end]; cast by the database, as ``candle_closes_frame`` reads closes."""
    return _candles_as_doubles(instrument_ids, timeframe, start, end,
                               ["open", "high", "low", "close", "volume", "turnover"])


def _candles_as_doubles(instrument_ids: list[int], timeframe: str, start: datetime, end: datetime,
                        names: list[str]) -> pd.DataFrame:
    """(instrument_id, open_time UTC, *names as floats) of the candles in [start, end], cast by the database."""
    import pandas as pd

    columns = ["instrument_id", "open_time", *names]
    if not instrument_ids:
        return pd.DataFrame(columns=columns)
    quote = connection.ops.quote_name
    placeholders = ", ".join(["%s"] * len(instrument_ids))
    casts = ", ".join(f"CAST({quote(name)} AS DOUBLE)" for name in names)
    sql = (
        f"SELECT {quote('instrument_id')}, {quote('open_time')}, {casts} "  # noqa: S608
        f"FROM {quote(Candle._meta.db_table)} WHERE {quote('instrument_id')} IN ({placeholders}) "
        f"AND {quote('timeframe')} = %s AND {quote('open_time')} >= %s AND {quote('open_time')} <= %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [*instrument_ids, timeframe, adapt(start), adapt(end)])
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
    if not frame.empty:
        # SQLite hands back text, MySQL naive datetimes; both are UTC. A NULL (turnover unknown) becomes NaN.
        frame["open_time"] = pd.to_datetime(frame["open_time"], utc=True)
        frame[names] = frame[names].astype(float)
    return frame


def newest_closes(instrument_ids: list[int], timeframe: str, *, newest_open: datetime, oldest_open: datetime
                  ) -> dict[int, Decimal]:
    """The stored close (exact Decimal) of each instrument's newest bar with oldest_open < open time <=
    newest_open; instruments without one are absent. One query."""
    rows = (
        Candle.objects.filter(instrument_id__in=instrument_ids, timeframe=timeframe, open_time__lte=newest_open,
                              open_time__gt=oldest_open)
        .order_by("open_time")
        .values_list("instrument_id", "close")
    )
    return dict(rows)  # ordered by time: the newest close of each instrument wins


def newest_bar(instruments: list[Instrument], timeframe: str) -> datetime | None:
    """Open time of the newest stored bar of any of ``instruments`` (None when none is stored)."""
    times = newest_bar_times([i.pk for i in instruments], timeframe, end=None).values()
    return max(times) if times else None


def newest_bar_times(instrument_ids: list[int], timeframe: str, *, end: datetime | None) -> dict[int, datetime]:
    """Open time of each instrument's newest stored bar up to ``end`` (all bars if None)."""
    candles = Candle.objects.filter(instrument_id__in=instrument_ids, timeframe=timeframe)
    if end is not None:
        candles = candles.filter(open_time__lte=end)
    return dict(candles.values_list("instrument_id").annotate(newest=Max("open_time"))
                .values_list("instrument_id", "newest"))


def decimal_closes(instrument_id: int, timeframe: str, *, start: datetime, end: datetime) -> dict[datetime, Decimal]:
    """Open time -> the stored close (exact Decimal) of one instrument's bars in [start, end]."""
    return dict(
        Candle.objects.filter(instrument_id=instrument_id, timeframe=timeframe, open_time__gte=start,
                              open_time__lte=end).values_list("open_time", "close")
    )


BAR_FIELDS = ("open", "high", "low", "close", "volume", "turnover")


def decimal_bars(instrument_ids: list[int], timeframe: str, *, start: datetime, end: datetime
                 ) -> list[tuple[int, datetime, tuple]]:
    """(instrument id, open time, (open, high, low, close, volume, turnover)) of the stored bars in [start, end],
    exact Decimals (turnover None where the exchange gave none)."""
    rows = Candle.objects.filter(instrument_id__in=instrument_ids, timeframe=timeframe, open_time__gte=start,
                                 open_time__lte=end).order_by().values_list("instrument_id", "open_time",
                                                                            *BAR_FIELDS)
    return [(row[0], row[1], row[2:]) for row in rows]


def candle_bounds(*, exchange: str | None = None, timeframe: str | None = None, start: datetime | None = None,
                  end: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """(first, last) open time of the stored candles of an exchange and timeframe in [start, end]; (None, None)
    when there are none.

    With a timeframe, each instrument's first and last bar are two seeks of the unique (instrument, timeframe,
    open_time) index, and the bounds the extremes of those: a scan of every candle took 0.4 s for 100 symbols.
    """
    candles = Candle.objects.all()
    if timeframe is not None:
        candles = candles.filter(timeframe=timeframe)
    if start is not None:
        candles = candles.filter(open_time__gte=start)
    if end is not None:
        candles = candles.filter(open_time__lte=end)
    if timeframe is None:
        if exchange is not None:
            candles = candles.filter(instrument__exchange=exchange)
        bounds = candles.aggregate(first=Min("open_time"), last=Max("open_time"))
        return bounds["first"], bounds["last"]
    instruments = Instrument.objects.all() if exchange is None else Instrument.objects.filter(exchange=exchange)
    own = candles.filter(instrument_id=OuterRef("pk")).values("open_time")
    ends = instruments.annotate(first=Subquery(own.order_by("open_time")[:1]),
                                last=Subquery(own.order_by("-open_time")[:1]))
    rows = [(first, last) for first, last in ends.values_list("first", "last") if first is not None]
    return (min(r[0] for r in rows), max(r[1] for r in rows)) if rows else (None, None)


def symbols_with_candles(*, exchange: str, timeframe: str) -> set[str]:
    """The symbols of ``exchange`` with at least one stored ``timeframe`` bar (one index seek per instrument)."""
    bars = Candle.objects.filter(instrument_id=OuterRef("pk"), timeframe=timeframe)
    return set(Instrument.objects.filter(exchange=exchange).filter(Exists(bars)).values_list("symbol", flat=True))


# ------------------------------------------------------------------------------------------- walk-forward history


def candle_matrices(*, instruments: list[Instrument], timeframe: str, start: datetime, end: datetime
                    ) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray]]:
    """(grid, {"close", "open", "high", "low", "turnover"}) of ``instruments`` (columns in the order given) on the
    regular bars of ``timeframe`` from ``start`` to ``end``, read in one streamed query; NaN where no bar is stored
    (before a listing); closes only: short gaps (up to ``MAX_FORWARD_FILL_BARS``) forward-filled as the price grid
    does; turnover in quote currency per
    bar, the stored one or close x volume where none is stored (-1 marks none in the query), NaN where no bar is
    stored."""
    import pandas as pd

    from pairs.marketdata.grid import MAX_FORWARD_FILL_BARS

    step = pd.Timedelta(milliseconds=timeframe_ms(timeframe))
    grid = pd.date_range(start=pd.Timestamp(start).ceil(step), end=pd.Timestamp(end), freq=step)
    names = ("close", "open", "high", "low", "volume", "turnover")
    matrices = {name: np.full((len(grid), len(instruments)), np.nan) for name in names}
    if not instruments or not len(grid):
        matrices.pop("volume")
        return grid, matrices
    quote = connection.ops.quote_name
    ids = [i.pk for i in instruments]
    if connection.vendor in EPOCH_SECONDS_SQL:
        seconds = EPOCH_SECONDS_SQL[connection.vendor].format(column=quote("open_time"))
    else:  # pragma: no cover - both supported databases have an expression above
        raise NotImplementedError(f"candle_matrices: no epoch expression for {connection.vendor}")
    sql = (
        f"SELECT {quote('instrument_id')}, {seconds}, "
        + ", ".join(f"CAST({quote(name)} AS DOUBLE)" for name in names[:-1])
        + f", COALESCE(CAST({quote('turnover')} AS DOUBLE), -1.0) "
        f"FROM {quote(Candle._meta.db_table)} WHERE {quote('instrument_id')} IN ({', '.join(['%s'] * len(ids))}) "
        f"AND {quote('timeframe')} = %s AND {quote('open_time')} >= %s AND {quote('open_time')} <= %s"
    )
    for rows, columns, values in grid_rows(sql, ids, timeframe, grid[0].to_pydatetime(), grid[-1].to_pydatetime()):
        for k, name in enumerate(names):
            matrices[name][rows, columns] = values[:, k]
    volume = matrices.pop("volume")
    stored = matrices["turnover"]
    matrices["turnover"] = np.where(stored < 0, matrices["close"] * volume, stored)
    matrices["close"] = pd.DataFrame(matrices["close"]).ffill(limit=MAX_FORWARD_FILL_BARS).to_numpy()
    return grid, matrices


def ladder_rules() -> list:
    """The ladder's levels as ``grading.LevelRule`` (thresholds are data, edited in the admin)."""
    from pairs.quant.grading import LevelRule

    return [
        LevelRule(level.number, level.requires_live_evidence, level.min_trades, level.min_win_rate,
                  level.min_profit_factor, level.max_drawdown, level.max_qvalue, level.min_half_life_bars,
                  level.max_half_life_bars)
        for level in Level.objects.order_by("number")
    ]


def walkforward_bounds(*, instruments: list[Instrument], timeframe: str) -> tuple[datetime | None, datetime | None]:
    """(first, last) open time of the stored candles of ``instruments``."""
    bounds = Candle.objects.filter(instrument__in=instruments, timeframe=timeframe).aggregate(
        first=Min("open_time"), last=Max("open_time"))
    return bounds["first"], bounds["last"]
