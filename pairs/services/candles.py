"""Candle writes: the bulk upsert, and the check that refuses to change stored bars.

Candles are written in bulk, a few statements per batch of up to UPSERT_BATCH_ROWS rows (SQLite: ``ON CONFLICT DO
UPDATE``; MySQL: ``ON DUPLICATE KEY UPDATE`` for new bars, an ``UPDATE ... JOIN`` from a staging table for stored
ones, see ``_mysql_upsert``), so importing or fetching the same bars twice stores each bar once, with the latest
values. Numbers travel as decimal text, never as binary floats, so the database holds the source's digits.

Who may change a stored bar: an exchange fetch may (``overwrite=True``, the default): the exchange is the source of
truth and corrects its last bars now and then. A file import may not unless asked to (``overwrite=False``): a file
that disagrees with stored history is more likely the wrong file than a correction, and history that changes
silently changes every statistic computed on it. The check compares the batch with the stored bars in the database,
one query per chunk (``_stored_bars_differing``), in the columns' own types, so "differs" means "the upsert would
change it".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from django.db import connection, transaction

from core.formatting import plain
from pairs.marketdata.validation import MAX_EXAMPLES, TIMEFRAME_MS
from pairs.models import Candle, Instrument

# Rows per INSERT statement: large enough that round trips don't dominate, small enough to stay far below
# MySQL's max_allowed_packet (a candle row is ~150 bytes of SQL: 10,000 rows ~ 1.5 MB).
UPSERT_BATCH_ROWS = 10_000
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
_UPSERT_COLUMNS = ("instrument_id", "timeframe", "open_time", *_VALUE_COLUMNS)
_STAGING_TABLE = "candle_upsert_staging"
_MYSQL_STAGING = f"`{_STAGING_TABLE}`"


@dataclass
class BarDifferences:
    """Stored bars a batch would change: how many, and the first MAX_EXAMPLES as text (time, stored -> new)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


class StoredCandlesDifferError(Exception):
    """Candles refused because they would change bars already stored (``candles_upsert(overwrite=False)``).
    Nothing of the batch was written; ``differences`` says which bars and how they differ."""

    def __init__(self, symbol: str, timeframe: str, differences: BarDifferences):
        self.symbol = symbol
        self.timeframe = timeframe
        self.differences = differences
        more = differences.count - len(differences.examples)
        lines = [*differences.examples, *([f"... and {more} more"] if more > 0 else [])]
        self.detail = (
            f"{differences.count} stored {timeframe} bar(s) of {symbol} would change (stored -> new):\n  "
            + "\n  ".join(lines)
        )
        super().__init__(f"{symbol}: {self.detail}")


def _decimal_text(values: np.ndarray) -> list[str]:
    # repr is the shortest text that reads back as the same float: the digits the source printed, no binary
    # noise (it may use exponent notation, which MySQL and SQLite both read as an exact decimal).
    return list(map(repr, values.tolist()))


def _mysql_upsert(cursor, table: str, rows: list[tuple]) -> None:
    """MySQL/MariaDB: rows of one instrument and timeframe, in open-time order, one key each, in chunks.

    A chunk whose time range holds no stored bar (a first import, the next page of a fetch) is one multi-row
    ``INSERT ... ON DUPLICATE KEY UPDATE``. Any other chunk is loaded into a MEMORY staging table, then
    ``UPDATE candle JOIN staging`` rewrites the stored bars: the server compares each stored row with the new one
    in the columns' own decimal type and writes only the rows that differ. Unless that UPDATE found every row of
    the chunk, ``INSERT ... SELECT`` adds the missing bars. Why: ``ON DUPLICATE KEY UPDATE`` on a stored bar first
    inserts a clustered-index record under a fresh id and takes it back when the unique key clashes, which made
    re-upserting half as fast as inserting; the join goes to the stored row through the unique key directly.
    When the chunk covers most bars of its time range the UPDATE walks the stored range in index order and looks
    each bar up in the staging table (a 40% cheaper UPDATE than one index descent per staged row); a sparse chunk
    is driven from the staging table, so it never scans a long range for a few bars.

    Literals: every value is an integer id, a timeframe from TIMEFRAME_MS, a datetime text we formatted, or the
    repr of a finite float, so nothing needs escaping; skipping the driver's per-value escaping doubles the rate.
    """
    quote = connection.ops.quote_name
    target = quote(table)
    columns = ", ".join(quote(c) for c in _UPSERT_COLUMNS)
    on_duplicate = "ON DUPLICATE KEY UPDATE " + ", ".join(f"{quote(c)} = VALUES({quote(c)})" for c in _VALUE_COLUMNS)
    instrument_id, timeframe = rows[0][0], rows[0][1]
    key = [instrument_id, timeframe]
    same_series = f"c.{quote('instrument_id')} = %s AND c.{quote('timeframe')} = %s"
    same_bar = f"{same_series} AND c.{quote('open_time')} = s.{quote('open_time')}"
    staged = [quote("open_time"), *(quote(c) for c in _VALUE_COLUMNS)]
    missing = f"c.{quote(Candle._meta.pk.column)} IS NULL"
    # S608 (noqa below): the names are ours, the values are numbers and texts we formatted (see above).
    probe = f"SELECT 1 FROM {target} c WHERE {same_series} AND c.{quote('open_time')} BETWEEN %s AND %s LIMIT 1"  # noqa: S608
    assignments = ", ".join(f"c.{name} = s.{name}" for name in staged[1:])
    update_staged = f"UPDATE {target} c JOIN {_MYSQL_STAGING} s ON {same_bar} SET {assignments}"  # noqa: S608
    update_range = (
        f"UPDATE {target} c STRAIGHT_JOIN {_MYSQL_STAGING} s ON c.{quote('open_time')} = s.{quote('open_time')} "  # noqa: S608
        f"SET {assignments} WHERE {same_series} AND c.{quote('open_time')} BETWEEN %s AND %s"
    )
    step = timedelta(milliseconds=TIMEFRAME_MS[timeframe])
    insert_missing = (
        f"INSERT INTO {target} ({columns}) SELECT %s, %s, "  # noqa: S608
        + ", ".join(f"s.{name}" for name in staged)
        + f" FROM {_MYSQL_STAGING} s LEFT JOIN {target} c ON {same_bar} WHERE {missing} "
        + on_duplicate  # a bar another transaction added since: updated, as the row-by-row upsert would
    )
    staging_created = False
    for start in range(0, len(rows), UPSERT_BATCH_ROWS):
        batch = rows[start : start + UPSERT_BATCH_ROWS]
        first, last = batch[0][2], batch[-1][2]
        cursor.execute(probe, [*key, first, last])
        if cursor.fetchone() is None:
            values = ",".join(f"({i},'{tf}','{t}',{o},{h},{lo},{c},{v})" for i, tf, t, o, h, lo, c, v in batch)
            cursor.execute(f"INSERT INTO {target} ({columns}) VALUES {values} {on_duplicate}")  # noqa: S608
            continue
        if not staging_created:
            _staging_create(cursor)
            staging_created = True
        values = ",".join(f"('{t}',{o},{h},{lo},{c},{v})" for _, _, t, o, h, lo, c, v in batch)
        cursor.execute(f"INSERT INTO {_MYSQL_STAGING} ({', '.join(staged)}) VALUES {values}")  # noqa: S608
        bars_in_range = (datetime.fromisoformat(last) - datetime.fromisoformat(first)) // step + 1
        if bars_in_range <= 2 * len(batch):
            cursor.execute(update_range, [*key, first, last])
        else:
            cursor.execute(update_staged, key)
        # Django's MySQL connections count the rows an UPDATE found, changed or not (CLIENT_FOUND_ROWS). With a
        # driver that counts only changed rows the INSERT below still runs, and still adds just the missing bars.
        if cursor.rowcount < len(batch):
            cursor.execute(insert_missing, [*key, *key])
        cursor.execute(f"DELETE FROM {_MYSQL_STAGING}")  # noqa: S608
    if staging_created:
        _staging_drop(cursor)


def _staging_create(cursor) -> None:
    """The session's staging table for ``_mysql_upsert`` and the stored-bars check: open time and values, typed
    as in the candle table (SQLite: declared the same way, so a value is converted as the candle column converts it).

    Temporary tables belong to the connection and don't end the transaction. MEMORY, because nothing has to
    survive a crash and it loads fastest (InnoDB and Aria staging tables measured slower). One left behind by a
    failed call is replaced here.
    """
    quote = connection.ops.quote_name
    fields = [Candle._meta.get_field(name) for name in ("open_time", *_VALUE_COLUMNS)]
    definitions = ", ".join(f"{quote(f.column)} {f.db_type(connection)} NOT NULL" for f in fields)
    table = f"{definitions}, PRIMARY KEY ({quote('open_time')})"
    if connection.vendor == "mysql":
        cursor.execute(f"DROP TEMPORARY TABLE IF EXISTS {_MYSQL_STAGING}")
        cursor.execute(f"CREATE TEMPORARY TABLE {_MYSQL_STAGING} ({table}) ENGINE=MEMORY")
    else:
        cursor.execute(f"DROP TABLE IF EXISTS temp.{quote(_STAGING_TABLE)}")
        cursor.execute(f"CREATE TEMP TABLE {quote(_STAGING_TABLE)} ({table})")


def _staging_drop(cursor) -> None:
    temporary = "TEMPORARY " if connection.vendor == "mysql" else ""
    cursor.execute(f"DROP {temporary}TABLE {connection.ops.quote_name(_STAGING_TABLE)}")


def _staging_load(cursor, batch: list[tuple]) -> None:
    """The batch's open times and values into the (empty) staging table. MySQL: one multi-row INSERT of literals
    (see ``_mysql_upsert`` on why that is safe and fast); SQLite: one prepared INSERT run per row."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in ("open_time", *_VALUE_COLUMNS))
    if connection.vendor == "mysql":
        values = ",".join(f"('{t}',{o},{h},{lo},{c},{v})" for _, _, t, o, h, lo, c, v in batch)
        cursor.execute(f"INSERT INTO {_MYSQL_STAGING} ({names}) VALUES {values}")  # noqa: S608
    else:
        sql = f"INSERT INTO {quote(_STAGING_TABLE)} ({names}) VALUES ({', '.join(['%s'] * 6)})"  # noqa: S608
        cursor.executemany(sql, [row[2:] for row in batch])


def _stored_bars_differing(cursor, table: str, rows: list[tuple]) -> BarDifferences:
    """The stored bars that ``rows`` (one instrument and timeframe, in open-time order) would change.

    Per chunk: a probe for any stored bar in the chunk's time range (none on a first import: nothing more to do);
    else the chunk goes into the staging table and one query joins it to the stored bars and returns the first
    differing ones with the count of all (a window COUNT, before the LIMIT). The staging columns have the candle
    columns' types, so a value that would be stored as the stored one (beyond the 12th decimal, 1.50 for 1.5)
    doesn't differ. On MySQL the join locks the stored bars it reads (FOR UPDATE) until the transaction ends, so
    no other writer changes them between this check and the upsert; SQLite has one writer at a time anyway.
    """
    quote = connection.ops.quote_name
    target, staging = quote(table), quote(_STAGING_TABLE)
    instrument_id, timeframe = rows[0][0], rows[0][1]
    same_series = f"c.{quote('instrument_id')} = %s AND c.{quote('timeframe')} = %s"
    # S608 (noqa below): the names are ours, the values are parameters.
    probe = f"SELECT 1 FROM {target} c WHERE {same_series} AND c.{quote('open_time')} BETWEEN %s AND %s LIMIT 1"  # noqa: S608
    columns = [quote(c) for c in _VALUE_COLUMNS]
    compare = (
        f"SELECT c.{quote('open_time')}, {', '.join(f'c.{c}' for c in columns)}, "  # noqa: S608
        f"{', '.join(f's.{c}' for c in columns)}, COUNT(*) OVER () "
        f"FROM {target} c JOIN {staging} s ON {same_series} AND c.{quote('open_time')} = s.{quote('open_time')} "
        f"WHERE {' OR '.join(f'c.{c} <> s.{c}' for c in columns)} "
        f"ORDER BY c.{quote('open_time')} LIMIT %s"
        + (" FOR UPDATE" if connection.features.has_select_for_update else "")
    )
    differences = BarDifferences()
    staging_created = False
    for start in range(0, len(rows), UPSERT_BATCH_ROWS):
        batch = rows[start : start + UPSERT_BATCH_ROWS]
        cursor.execute(probe, [instrument_id, timeframe, batch[0][2], batch[-1][2]])
        if cursor.fetchone() is None:
            continue
        if not staging_created:
            _staging_create(cursor)
            staging_created = True
        _staging_load(cursor, batch)
        cursor.execute(compare, [instrument_id, timeframe, max(1, MAX_EXAMPLES - len(differences.examples))])
        found = cursor.fetchall()
        if found:
            differences.count += found[0][-1]
            room = MAX_EXAMPLES - len(differences.examples)
            differences.examples.extend(_difference_text(row) for row in found[:room])
        cursor.execute(f"DELETE FROM {staging}")  # noqa: S608
    if staging_created:
        _staging_drop(cursor)
    return differences


def _difference_text(row: tuple) -> str:
    """'2021-01-01T02:00:00Z: close 102.5 -> 999, volume 12 -> 13' from a row of ``_stored_bars_differing``."""
    n = len(_VALUE_COLUMNS)
    opened = datetime.fromisoformat(str(row[0]))
    old, new = row[1 : 1 + n], row[1 + n : 1 + 2 * n]
    changes = [
        f"{name} {_number_text(a)} -> {_number_text(b)}"
        for name, a, b in zip(_VALUE_COLUMNS, old, new, strict=True)
        if a != b
    ]
    return f"{opened:%Y-%m-%dT%H:%M:%SZ}: {', '.join(changes)}"


def _number_text(value) -> str:
    """A number as the database returned it (Decimal on MySQL, float or int on SQLite), without trailing zeros."""
    return plain(Decimal(repr(value)) if isinstance(value, float) else Decimal(value))


def _sqlite_upsert(cursor, table: str, rows: list[tuple]) -> None:
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in _UPSERT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_UPSERT_COLUMNS))
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in _VALUE_COLUMNS)
    conflict = ", ".join(quote(c) for c in ("instrument_id", "timeframe", "open_time"))
    sql = (
        f"INSERT INTO {quote(table)} ({names}) VALUES ({placeholders}) "  # noqa: S608 - only our own names
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )
    for start in range(0, len(rows), UPSERT_BATCH_ROWS):
        cursor.executemany(sql, rows[start : start + UPSERT_BATCH_ROWS])


_UPSERTS = {"mysql": _mysql_upsert, "sqlite": _sqlite_upsert}


def candles_upsert(*, instrument: Instrument, timeframe: str, candles: pd.DataFrame, overwrite: bool = True) -> int:
    """Insert or update validated candles (columns timestamp ms, open, high, low, close, volume); returns rows.

    With ``overwrite`` False, a batch that would change any stored bar raises StoredCandlesDifferError and writes
    nothing (file imports; see the module docstring). Bars stored with the same values are no change: an identical
    re-import succeeds. Runs in the caller's transaction when there is one, else in its own: a failure stores none
    of the batch.
    """
    if candles.empty:
        return 0
    if timeframe not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    values = candles.loc[:, list(_VALUE_COLUMNS)].to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        raise ValueError(f"{instrument.symbol}: candles with NaN or infinite values must be validated first")
    upsert = _UPSERTS.get(connection.vendor)
    if upsert is None:
        raise NotImplementedError(f"candle upsert is not written for {connection.vendor}")
    n = len(candles)
    # Bars are stored to the second. One row per open time, the last given winning as it would row by row, in
    # time order (so each chunk of the MySQL path covers one time range).
    seconds = np.floor_divide(candles["timestamp"].to_numpy(), 1000).astype("int64")
    unique_seconds, last_in_reversed = np.unique(seconds[::-1], return_index=True)
    values = values[n - 1 - last_in_reversed]
    open_times = pd.to_datetime(unique_seconds, unit="s").strftime("%Y-%m-%d %H:%M:%S").tolist()
    value_texts = [_decimal_text(values[:, k]) for k in range(len(_VALUE_COLUMNS))]
    m = len(open_times)
    rows = list(zip([instrument.pk] * m, [timeframe] * m, open_times, *value_texts, strict=True))
    with transaction.atomic(), connection.cursor() as cursor:
        if not overwrite:
            differences = _stored_bars_differing(cursor, Candle._meta.db_table, rows)
            if differences.count:
                raise StoredCandlesDifferError(instrument.symbol, timeframe, differences)
        upsert(cursor, Candle._meta.db_table, rows)
    return n
