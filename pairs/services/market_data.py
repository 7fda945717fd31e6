"""Writes of market data: instruments and candles.

Candles are written in bulk, a few statements per batch of up to UPSERT_BATCH_ROWS rows (SQLite: ``ON CONFLICT DO
UPDATE``; MySQL: ``ON DUPLICATE KEY UPDATE`` for new bars, an ``UPDATE ... JOIN`` from a staging table for stored
ones, see ``_mysql_upsert``), so importing or fetching the same bars twice stores each bar once, with the latest
values. Numbers travel as decimal text, never as binary floats, so the database holds the source's digits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from exchanges.errors import ExchangeError
from exchanges.retry import call_with_retry
from exchanges.specs import InstrumentSpec
from pairs.marketdata.files import CandleFileError, candle_files, read_candle_file
from pairs.marketdata.funding import funding_interval_minutes
from pairs.marketdata.validation import (
    TIMEFRAME_MS,
    CandleValidationError,
    ValidationReport,
    timeframe_ms,
    validate_candles,
)
from pairs.models import Candle, FundingRate, Instrument

logger = logging.getLogger(__name__)

# Rows per INSERT statement: large enough that round trips don't dominate, small enough to stay far below
# MySQL's max_allowed_packet (a candle row is ~150 bytes of SQL: 10,000 rows ~ 1.5 MB).
UPSERT_BATCH_ROWS = 10_000
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
_UPSERT_COLUMNS = ("instrument_id", "timeframe", "open_time", *_VALUE_COLUMNS)
_MYSQL_STAGING = "`candle_upsert_staging`"


@dataclass
class InstrumentSyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    delisted: list[str] = field(default_factory=list)


@transaction.atomic
def instruments_sync(*, exchange: str, specs: Iterable[InstrumentSpec], complete: bool = True) -> InstrumentSyncResult:
    """Create or update instruments from the exchange's list; with ``complete``, any instrument of the exchange
    that is missing from the list (or inactive in it) is marked delisted. The admin's exclusions are kept."""
    result = InstrumentSyncResult()
    existing = {i.symbol: i for i in Instrument.objects.select_for_update().filter(exchange=exchange)}
    seen: set[str] = set()
    now = timezone.now()
    for spec in specs:
        seen.add(spec.symbol)
        status = Instrument.Status.TRADING if spec.active else Instrument.Status.DELISTED
        values = {
            "ccxt_symbol": spec.ccxt_symbol, "base": spec.base, "quote": spec.quote, "settle": spec.settle,
            "kind": spec.kind, "status": status, "tick_size": spec.tick_size, "qty_step": spec.qty_step,
            "min_qty": spec.min_qty, "max_qty": spec.max_qty, "min_notional": spec.min_notional,
            "funding_interval_minutes": spec.funding_interval_minutes, "listed_at": spec.listed_at,
        }
        if spec.turnover_24h is not None:
            values["turnover_24h"] = spec.turnover_24h
        instrument = existing.get(spec.symbol)
        if instrument is None:
            Instrument.objects.create(exchange=exchange, symbol=spec.symbol, **values)
            result.created.append(spec.symbol)
            continue
        if not spec.active and instrument.status != Instrument.Status.DELISTED:
            values["delisted_at"] = now
            result.delisted.append(spec.symbol)
        elif spec.active and instrument.delisted_at is not None:
            values["delisted_at"] = None  # listed again
        changed = [name for name, value in values.items() if getattr(instrument, name) != value]
        if changed:
            for name in changed:
                setattr(instrument, name, values[name])
            instrument.save(update_fields=[*changed, "updated_at"])
            result.updated.append(spec.symbol)
    if complete:
        gone = [i for s, i in existing.items() if s not in seen and i.status != Instrument.Status.DELISTED]
        for instrument in gone:
            instrument.status = Instrument.Status.DELISTED
            instrument.delisted_at = now
            instrument.save(update_fields=["status", "delisted_at", "updated_at"])
            result.delisted.append(instrument.symbol)
    return result


def instrument_get_or_create_for_import(*, exchange: str, symbol: str, quote: str = "USDT") -> Instrument:
    """An instrument for candles imported from files, when the exchange hasn't described it yet.

    Its order filters stay empty until the universe is fetched from the exchange; the bots refuse to size
    an order without them.
    """
    base = symbol[: -len(quote)] if symbol.endswith(quote) and len(symbol) > len(quote) else symbol
    instrument, _ = Instrument.objects.get_or_create(
        exchange=exchange,
        symbol=symbol,
        defaults={"base": base, "quote": quote, "settle": quote, "ccxt_symbol": f"{base}/{quote}:{quote}"},
    )
    return instrument


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
            _mysql_staging_create(cursor)
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
        cursor.execute(f"DROP TEMPORARY TABLE {_MYSQL_STAGING}")


def _mysql_staging_create(cursor) -> None:
    """The session's staging table for ``_mysql_upsert``: open time and values, typed as in the candle table.

    Temporary tables belong to the connection and don't end the transaction. MEMORY, because nothing has to
    survive a crash and it loads fastest (InnoDB and Aria staging tables measured slower). One left behind by a
    failed call is replaced here.
    """
    quote = connection.ops.quote_name
    fields = [Candle._meta.get_field(name) for name in ("open_time", *_VALUE_COLUMNS)]
    definitions = ", ".join(f"{quote(f.column)} {f.db_type(connection)} NOT NULL" for f in fields)
    cursor.execute(f"DROP TEMPORARY TABLE IF EXISTS {_MYSQL_STAGING}")
    cursor.execute(
        f"CREATE TEMPORARY TABLE {_MYSQL_STAGING} ({definitions}, PRIMARY KEY ({quote('open_time')})) ENGINE=MEMORY"
    )


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


def candles_upsert(*, instrument: Instrument, timeframe: str, candles: pd.DataFrame) -> int:
    """Insert or update validated candles (columns timestamp ms, open, high, low, close, volume); returns rows.

    Runs in the caller's transaction when there is one, else in its own: a failure stores none of the batch.
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
        upsert(cursor, Candle._meta.db_table, rows)
    return n


@dataclass
class FileImportResult:
    symbol: str
    rows: int = 0
    report: ValidationReport | None = None
    error: str = ""


@dataclass
class ImportSummary:
    files: list[FileImportResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def failed(self) -> list[FileImportResult]:
        return [f for f in self.files if f.error]


def candles_import_directory(
    *, directory: Path, timeframe: str, exchange: str, symbols: list[str] | None = None,
    now_ms: int | None = None, progress=None,
) -> ImportSummary:
    """Import one candle file per symbol. Each file is validated whole before it is written, and written in one
    transaction: a bad file is reported and leaves nothing behind; the other files still import."""
    summary = ImportSummary()
    files = candle_files(directory, symbols)
    for symbol, path in files.items():
        result = FileImportResult(symbol=symbol)
        summary.files.append(result)
        try:
            clean, result.report = validate_candles(
                read_candle_file(path), symbol=symbol, timeframe=timeframe, now_ms=now_ms
            )
            with transaction.atomic():
                instrument = instrument_get_or_create_for_import(exchange=exchange, symbol=symbol)
                result.rows = candles_upsert(instrument=instrument, timeframe=timeframe, candles=clean)
        except (CandleFileError, CandleValidationError) as exc:
            result.error = str(exc)
            logger.warning("candle import of %s rejected: %s", path.name, exc)
        if progress is not None:
            progress(result)
    return summary


def last_candle_time(*, instrument: Instrument, timeframe: str) -> datetime | None:
    latest = (
        Candle.objects.filter(instrument=instrument, timeframe=timeframe)
        .order_by("-open_time")
        .values_list("open_time", flat=True)
        .first()
    )
    return latest.astimezone(UTC) if latest else None


def universe_refresh(*, exchange_client, exchange: str, quote: str) -> InstrumentSyncResult:
    """Instruments and 24h turnover from the exchange into the instrument table (delisting the missing ones)."""
    specs = call_with_retry(lambda: exchange_client.linear_instruments(quote=quote), description="load instruments")
    turnover = call_with_retry(exchange_client.turnover_24h, description="fetch tickers")
    specs = [replace(spec, turnover_24h=turnover.get(spec.symbol)) for spec in specs]
    return instruments_sync(exchange=exchange, specs=specs)


@dataclass
class FetchResult:
    symbol: str
    rows: int = 0
    requests: int = 0
    funding_rates: int = 0
    error: str = ""


def candles_fetch_instrument(
    *, exchange_client, instrument: Instrument, timeframe: str, backfill_bars: int, now_ms: int | None = None
) -> FetchResult:
    """Fetch an instrument's closed bars from the last stored one (or ``backfill_bars`` back) up to now, page by
    page; each page is validated and upserted on its own, so an interrupted fetch resumes where it stopped."""
    step = timeframe_ms(timeframe)
    now_ms = int(timezone.now().timestamp() * 1000) if now_ms is None else now_ms
    last = last_candle_time(instrument=instrument, timeframe=timeframe)
    since = int(last.timestamp() * 1000) + step if last else (now_ms // step - backfill_bars) * step
    page_size = exchange_client.max_candles_per_request()
    result = FetchResult(symbol=instrument.symbol)
    ccxt_symbol = instrument.ccxt_symbol or instrument.symbol
    while since + step <= now_ms:  # a bar is closed once its end has passed
        rows = call_with_retry(
            lambda since=since: exchange_client.fetch_candles(ccxt_symbol, timeframe, since_ms=since, limit=page_size),
            description=f"fetch {instrument.symbol} candles",
        )
        result.requests += 1
        rows = [r for r in rows if r[0] >= since]
        if not rows:
            break
        frame = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
        try:
            clean, _ = validate_candles(frame, symbol=instrument.symbol, timeframe=timeframe, now_ms=now_ms)
        except CandleValidationError as exc:
            result.error = str(exc)
            logger.warning("fetched candles rejected: %s", exc)
            break
        result.rows += candles_upsert(instrument=instrument, timeframe=timeframe, candles=clean)
        newest = int(frame["timestamp"].max())
        if newest < since:
            break
        since = newest + step
    return result


def candles_fetch(
    *, exchange_client, instruments: Iterable[Instrument], timeframe: str, backfill_bars: int,
    now_ms: int | None = None, progress=None,
) -> list[FetchResult]:
    results = []
    for instrument in instruments:
        try:
            result = candles_fetch_instrument(
                exchange_client=exchange_client, instrument=instrument, timeframe=timeframe,
                backfill_bars=backfill_bars, now_ms=now_ms,
            )
            if instrument.kind == Instrument.Kind.LINEAR_PERPETUAL and instrument.funding_interval_minutes:
                result.funding_rates = funding_rates_fetch_instrument(
                    exchange_client=exchange_client, instrument=instrument,
                    backfill_ms=backfill_bars * timeframe_ms(timeframe), now_ms=now_ms,
                )
        except ExchangeError as exc:
            # One instrument's failure (after retries) doesn't stop the others; it is reported.
            result = FetchResult(symbol=instrument.symbol, error=str(exc))
            logger.warning("fetching %s failed: %s", instrument.symbol, exc)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def funding_rates_fetch_instrument(
    *, exchange_client, instrument: Instrument, backfill_ms: int, now_ms: int | None = None
) -> int:
    """Fetch an instrument's funding settlements from the last stored one (or ``backfill_ms`` back) up to now,
    in windows of 200 settlements; stored once each (a re-fetch updates nothing it already has)."""
    now_ms = int(timezone.now().timestamp() * 1000) if now_ms is None else now_ms
    interval_ms = funding_interval_minutes(instrument.funding_interval_minutes) * 60_000
    last = instrument.funding_rates.order_by("-funding_time").values_list("funding_time", flat=True).first()
    since = int(last.timestamp() * 1000) + 1 if last else now_ms - backfill_ms
    ccxt_symbol = instrument.ccxt_symbol or instrument.symbol
    stored = 0
    while since <= now_ms:
        until = min(now_ms, since + 200 * interval_ms - 1)
        rows = call_with_retry(
            lambda since=since, until=until: exchange_client.fetch_funding_rates(
                ccxt_symbol, since_ms=since, until_ms=until
            ),
            description=f"fetch {instrument.symbol} funding rates",
        )
        rates = [
            FundingRate(instrument=instrument, funding_time=datetime.fromtimestamp(ts / 1000, tz=UTC), rate=rate)
            for ts, rate in rows if since <= ts <= until
        ]
        FundingRate.objects.bulk_create(rates, ignore_conflicts=True)
        stored += len(rates)
        since = until + 1
    return stored
