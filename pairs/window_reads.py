"""The price window's closes read from the candles table into a (bars x instruments) matrix (#18: the longest serial
step of a screening after the screen itself). ``pairs.selectors.price_window`` builds the window around it; the
walk-forward's ``candle_matrices`` streams its bars through the same ``grid_rows``."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from functools import partial
from itertools import chain

import numpy as np
from django.db import connection

from pairs.marketdata.grid import BarGrid
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, Instrument
from pairs.quant.forked import forked_map

# Rows per fetch while the window streams into its matrix: bounded memory (~5 MB of row tuples at a time) whatever
# the universe, few enough round trips that the fetch calls cost nothing beside the rows.
WINDOW_FETCH_ROWS = 50_000
# Seconds since 1970 of a stored open_time, computed by the database: an integer per row instead of a datetime (or
# a text the client parses). Both databases keep open_time as naive UTC.
EPOCH_SECONDS_SQL = {
    # unixepoch() (SQLite 3.38+) parses the stored text in half strftime's time: a tenth of the window's read.
    "sqlite": "unixepoch({column})" if sqlite3.sqlite_version_info >= (3, 38) else
              "CAST(strftime('%%s', {column}) AS INTEGER)",
    # TO_SECONDS counts from year 0 (62167219200 s before 1970); it costs the server less than TIMESTAMPDIFF.
    "mysql": "(TO_SECONDS({column}) - 62167219200)",
}


# Instruments from which a window read is shared by the processes it is given: below it a fork and a connection
# cost more than the rows.
SHARED_READ_MIN_INSTRUMENTS = 40

# The parent's raw connections that forked readers inherited: kept referenced so that no finaliser closes them from
# the child (closing a MySQL connection sends QUIT on the socket the parent still uses).
_INHERITED_CONNECTIONS: list[object] = []


def grid_block(ordered: list[Instrument], timeframe: str, grid: BarGrid, *, processes: int = 1) -> np.ndarray:
    """(bars x instruments) closes on ``grid``, NaN where no bar is stored; a bar off the grid is not placed.

    With ``processes`` > 1, forked children read a share of the instruments each on a connection of their own (#18:
    the database turns the rows into Python tuples one by one, the longest serial step of a screening after the
    screen). Only outside a transaction (a child's connection can't see its rows) and not on an in-memory database;
    otherwise, and for few instruments, one streamed query here."""
    if not ordered:
        return np.full((len(grid), 0), np.nan)
    if connection.vendor not in EPOCH_SECONDS_SQL:
        return _grid_block_from_frame(np.full((len(grid), len(ordered)), np.nan), ordered, timeframe, grid)
    if processes > 1 and len(ordered) >= SHARED_READ_MIN_INSTRUMENTS and _children_can_read():
        read = partial(_grid_columns_on_own_connection, ordered, timeframe, grid)
        return np.concatenate(forked_map(read, len(ordered), processes=processes), axis=1)
    return _grid_columns(ordered, timeframe, grid, 0, len(ordered))


def _children_can_read() -> bool:
    in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()
    return not connection.in_atomic_block and not in_memory


def _grid_columns_on_own_connection(ordered: list[Instrument], timeframe: str, grid: BarGrid, start: int,
                                    stop: int) -> np.ndarray:
    """``_grid_columns`` in a forked child, on a new connection: the inherited one is the parent's (its socket and
    its protocol state), so it is set aside, never used nor closed here."""
    _INHERITED_CONNECTIONS.append(connection.connection)
    connection.connection = None
    try:
        return _grid_columns(ordered, timeframe, grid, start, stop)
    finally:
        connection.close()


def _grid_columns(ordered: list[Instrument], timeframe: str, grid: BarGrid, start: int, stop: int) -> np.ndarray:
    """The columns ``start``..``stop - 1`` of ``grid_block``, in one streamed query."""
    block = np.full((len(grid), stop - start), np.nan)
    quote = connection.ops.quote_name
    ids = [i.pk for i in ordered[start:stop]]
    sql = (
        f"SELECT {quote('instrument_id')}, {EPOCH_SECONDS_SQL[connection.vendor].format(column=quote('open_time'))}, "  # noqa: S608
        f"CAST({quote('close')} AS DOUBLE) FROM {quote(Candle._meta.db_table)} "
        f"WHERE {quote('instrument_id')} IN ({', '.join(['%s'] * len(ids))}) AND {quote('timeframe')} = %s "
        f"AND {quote('open_time')} >= %s AND {quote('open_time')} <= %s"
    )
    for rows, columns, values in grid_rows(sql, ids, timeframe, grid.time(0), grid.time(-1)):
        block[rows, columns] = values[:, 0]
    return block


def grid_rows(sql: str, ids: list[int], timeframe: str, first: datetime, last: datetime):
    """Stream ``sql`` (instrument_id, epoch seconds, values...; parameters: ``ids``, timeframe, the grid's ``first``
    and ``last`` open times, aware) in chunks, as (grid rows, columns in ``ids``' order, values) of the bars that lie
    on the grid."""
    column = np.full(max(ids) + 1, -1, dtype=np.int64)
    column[ids] = np.arange(len(ids))
    first_s, step_s = int(first.timestamp()), timeframe_ms(timeframe) // 1000
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, timeframe, adapt(first), adapt(last)])
        while rows := cursor.fetchmany(WINDOW_FETCH_ROWS):
            # fromiter over the flattened rows: half the time np.array takes to walk a list of tuples.
            chunk = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * len(rows[0])).reshape(
                len(rows), -1)
            offsets = chunk[:, 1].astype(np.int64) - first_s
            on_grid = offsets % step_s == 0
            yield offsets[on_grid] // step_s, column[chunk[on_grid, 0].astype(np.int64)], chunk[on_grid, 2:]


def _grid_block_from_frame(block: np.ndarray, ordered: list[Instrument], timeframe: str,
                           bar_grid: BarGrid) -> np.ndarray:
    """``grid_block`` through ``candle_closes_frame``, for a database without an epoch expression above."""
    import pandas as pd

    from pairs.selectors import candle_closes_frame

    grid = bar_grid.index()
    frame = candle_closes_frame([i.pk for i in ordered], timeframe, grid[0].to_pydatetime(), grid[-1].to_pydatetime())
    if frame.empty:
        return block
    first_ns, step_ns = int(grid.as_unit("ns").asi8[0]), int(timeframe_ms(timeframe)) * 1_000_000
    offsets = pd.DatetimeIndex(frame["open_time"]).as_unit("ns").asi8 - first_ns
    on_grid = offsets % step_ns == 0
    column = {i.pk: k for k, i in enumerate(ordered)}
    columns = frame["instrument_id"].map(column).to_numpy()
    block[(offsets[on_grid] // step_ns), columns[on_grid]] = frame["close"].to_numpy(dtype=float)[on_grid]
    return block
