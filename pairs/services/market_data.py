"""Writes of market data: instruments and candles.

Candles are written by one bulk upsert statement per batch (MySQL ``ON DUPLICATE KEY UPDATE``, SQLite
``ON CONFLICT DO UPDATE``), so importing or fetching the same bars twice stores each bar once, with the latest
values. Numbers travel as decimal text, never as binary floats, so the database holds the source's digits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from pairs.marketdata.files import CandleFileError, candle_files, read_candle_file
from pairs.marketdata.validation import TIMEFRAME_MS, CandleValidationError, ValidationReport, validate_candles
from pairs.models import Candle, Instrument

logger = logging.getLogger(__name__)

# Rows per INSERT statement: large enough that round trips don't dominate, small enough to stay far below
# MySQL's max_allowed_packet (a candle row is ~150 bytes of SQL: 10,000 rows ~ 1.5 MB).
UPSERT_BATCH_ROWS = 10_000
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
_UPSERT_COLUMNS = ("instrument_id", "timeframe", "open_time", *_VALUE_COLUMNS)


@dataclass(frozen=True)
class InstrumentSpec:
    """An instrument as an exchange describes it (what the exchange adapter returns)."""

    symbol: str
    base: str
    quote: str
    settle: str = ""
    ccxt_symbol: str = ""
    kind: str = Instrument.Kind.LINEAR_PERPETUAL
    active: bool = True
    tick_size: Decimal | None = None
    qty_step: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    min_notional: Decimal | None = None
    funding_interval_minutes: int | None = None
    listed_at: datetime | None = None
    turnover_24h: Decimal | None = None


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
    """MySQL/MariaDB: multi-row INSERT ... ON DUPLICATE KEY UPDATE with the rows written as literals.

    Every value is an integer id, a timeframe from TIMEFRAME_MS, a datetime text we formatted, or the repr of a
    finite float, so nothing needs escaping; skipping the driver's per-value escaping doubles the rate.
    """
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in _UPSERT_COLUMNS)
    updates = ", ".join(f"{quote(c)} = VALUES({quote(c)})" for c in _VALUE_COLUMNS)
    head = f"INSERT INTO {quote(table)} ({names}) VALUES "
    tail = f" ON DUPLICATE KEY UPDATE {updates}"
    for start in range(0, len(rows), UPSERT_BATCH_ROWS):
        values = ",".join(
            f"({i},'{tf}','{t}',{o},{h},{lo},{c},{v})" for i, tf, t, o, h, lo, c, v in rows[start : start + UPSERT_BATCH_ROWS]
        )
        cursor.execute(head + values + tail)


def _sqlite_upsert(cursor, table: str, rows: list[tuple]) -> None:
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in _UPSERT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_UPSERT_COLUMNS))
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in _VALUE_COLUMNS)
    conflict = ", ".join(quote(c) for c in ("instrument_id", "timeframe", "open_time"))
    sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({placeholders}) ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
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
    open_times = pd.to_datetime(candles["timestamp"].to_numpy(), unit="ms").strftime("%Y-%m-%d %H:%M:%S").tolist()
    value_texts = [_decimal_text(values[:, k]) for k in range(len(_VALUE_COLUMNS))]
    n = len(open_times)
    rows = list(zip([instrument.pk] * n, [timeframe] * n, open_times, *value_texts, strict=True))
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
