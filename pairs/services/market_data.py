"""Writes of market data: instruments, candles from files and from the exchange, funding rates.

The candle writes themselves (bulk upsert, the check against stored bars) are in ``pairs.services.candles``. A file
import refuses to change a stored bar unless asked to (``overwrite``); an exchange fetch overwrites, the exchange
being the source of truth for its own bars (it corrects the last ones now and then).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from django.db import transaction
from django.utils import timezone

from core.audit import audit_record
from exchanges.errors import ExchangeError, TemporaryExchangeError
from exchanges.retry import call_with_retry
from exchanges.specs import InstrumentSpec
from pairs.marketdata.files import READ_ERRORS, SUFFIXES, CandleFileError, candle_files, read_candle_file
from pairs.marketdata.funding import funding_interval_minutes
from pairs.marketdata.validation import CandleValidationError, ValidationReport, timeframe_ms, validate_candles
from pairs.models import Candle, FundingRate, Instrument
from pairs.services.candles import StoredCandlesDifferError, candles_upsert

logger = logging.getLogger(__name__)
_SYMBOL_NAME = re.compile(r"[A-Z0-9][A-Z0-9._-]*")


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


@dataclass
class FileImportResult:
    symbol: str
    path: Path | None = None
    rows: int = 0
    report: ValidationReport | None = None
    error: str = ""
    differing_bars: int = 0  # stored bars the file would have changed (refused without ``overwrite``)


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
    now_ms: int | None = None, overwrite: bool = False, progress=None, actor_label: str = "",
) -> ImportSummary:
    """Import one candle file per symbol. Each file is read and validated whole before it is written, and written
    in one transaction: a file that can't be read, fails validation or (without ``overwrite``) would change a
    stored bar is reported and leaves nothing behind; the other files still import. Stored bars an ``overwrite``
    replaced are audited (by ``actor_label``), in the file's transaction."""
    summary = ImportSummary()
    files = candle_files(directory, symbols)
    if not files:
        # An empty directory, or one of other files (BTCUSDT.json, a .zip): importing nothing is no success.
        raise CandleFileError(f"{directory}: no candle file (one per symbol, named like BTCUSDT.csv.gz; formats "
                              f"{', '.join(SUFFIXES)})")
    for symbol, path in files.items():
        result = FileImportResult(symbol=symbol, path=path)
        summary.files.append(result)
        try:
            _import_symbol_check(path, symbol)
            clean, result.report = _candle_file_validated(path, symbol=symbol, timeframe=timeframe, now_ms=now_ms)
            _bars_check(path, result.report)
            with transaction.atomic():
                instrument = instrument_get_or_create_for_import(exchange=exchange, symbol=symbol)
                result.rows = _file_candles_store(instrument, timeframe, clean, overwrite=overwrite,
                                                  actor_label=actor_label, path=path)
        except (CandleFileError, CandleValidationError) as exc:
            result.error = str(exc)
        except StoredCandlesDifferError as exc:
            result.error = f"{path}: {exc.detail}"
            result.differing_bars = exc.differences.count
        if result.error:
            result.rows = 0
            logger.warning("candle import of %s rejected: %s", path.name, result.error)
        if progress is not None:
            progress(result)
    return summary


def _bars_check(path: Path, report: ValidationReport) -> None:
    """A file with no bar to store (a header only, or only the bar still open) is rejected: it was reported as
    imported, with 0 bars, and left an instrument without candles behind."""
    if report.rows_out:
        return
    what = (f"its {report.unclosed_dropped} bar(s) are still open" if report.unclosed_dropped
            else "it holds a header and no rows")
    raise CandleFileError(f"{path}: no bar to import ({what})")


def _import_symbol_check(path: Path, symbol: str, quote: str = "USDT") -> None:
    """The symbol a file's name gives must be one an exchange could list and the instrument table can hold: an
    empty one (".csv"), one with spaces or accents (a copy named "BTCUSDT (1).csv") or one longer than the columns
    would be stored as nonsense, or fail MariaDB's strict mode half way through the run."""
    longest = Instrument._meta.get_field("symbol").max_length
    longest_base = Instrument._meta.get_field("base").max_length
    base = symbol[: -len(quote)] if symbol.endswith(quote) and len(symbol) > len(quote) else symbol
    if not _SYMBOL_NAME.fullmatch(symbol):
        problem = "letters A-Z, digits, '.', '-' or '_' only, starting with a letter or digit"
    elif len(symbol) > longest or len(base) > longest_base:
        problem = f"at most {longest} characters, of which {longest_base} before the quote {quote}"
    elif base == symbol:
        # ETHBTC.csv (prices in BTC) or BTCUSD.csv was stored as a USDT contract named so, and the screening and the
        # replay took it into the USDT universe with prices that are not in USDT.
        raise CandleFileError(f"{path}: the file's name gives the symbol {symbol!r}, which is no {quote} contract "
                              f"(a linear {quote} perpetual's symbol ends with {quote}, like BTC{quote}): its prices "
                              f"would join the {quote} universe in another currency")
    else:
        return
    raise CandleFileError(f"{path}: the file's name gives the symbol {symbol!r}, which is not a symbol ({problem})")


def _file_candles_store(instrument: Instrument, timeframe: str, clean: pd.DataFrame, *, overwrite: bool,
                        actor_label: str, path: Path) -> int:
    """Store a file's candles; bars they change are refused, or with ``overwrite`` replaced and audited: the
    signals, the screening and the replay read these bars, so who changed which is kept."""
    try:
        return candles_upsert(instrument=instrument, timeframe=timeframe, candles=clean, overwrite=False)
    except StoredCandlesDifferError as exc:
        if not overwrite:
            raise
        rows = candles_upsert(instrument=instrument, timeframe=timeframe, candles=clean, overwrite=True)
        audit_record(action="overwrite_candles", channel="command", actor_label=actor_label, target=instrument,
                     summary=f"{path.name}: replaced {exc.differences.count} stored {timeframe} bar(s) of "
                             f"{instrument.symbol}",
                     details={"file": str(path), "timeframe": timeframe, "bars": exc.differences.count,
                              "examples": exc.differences.examples})
        return rows


def _candle_file_validated(path: Path, *, symbol: str, timeframe: str, now_ms: int | None
                           ) -> tuple[pd.DataFrame, ValidationReport]:
    """The file's candles, read and validated (pure work: nothing is stored yet). Whatever the readers and the
    checks raise on data they didn't foresee (a column of lists in a Parquet file, say) is a CandleFileError that
    names the file, not a traceback that stops the other files."""
    try:
        return validate_candles(read_candle_file(path), symbol=symbol, timeframe=timeframe, now_ms=now_ms)
    except (CandleFileError, CandleValidationError):
        raise
    except READ_ERRORS as exc:
        raise CandleFileError(f"{path}: cannot be read as candles: {type(exc).__name__}: {exc}") from exc


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
    page; each page is validated and upserted on its own, so an interrupted fetch resumes where it stopped. A bar
    the exchange returns with other values than stored ones replaces them: the exchange is the source of truth for
    its own bars (unlike a file import, which refuses to change stored history unless asked to)."""
    step = timeframe_ms(timeframe)
    now_ms = int(timezone.now().timestamp() * 1000) if now_ms is None else now_ms
    last = last_candle_time(instrument=instrument, timeframe=timeframe)
    last_ms = int(last.timestamp() * 1000) if last else None
    since = last_ms + step if last_ms is not None else (now_ms // step - backfill_bars) * step
    if last_ms is not None and since + step <= now_ms:
        # The newest stored bar is read again with the new ones: it may have been fetched moments after its close,
        # before the exchange had every trade of it (its volume, a late print), and only a re-read corrects it.
        since = last_ms
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
        # overwrite: the exchange is the source of truth for its bars, and corrects the last ones now and then.
        stored = candles_upsert(instrument=instrument, timeframe=timeframe, candles=clean, overwrite=True)
        result.rows += stored - int(last_ms is not None and bool((clean["timestamp"] == last_ms).any()))
        newest = int(frame["timestamp"].max())
        if newest < since:
            break
        since = newest + step
    return result


# After this many symbols in a row failed with a temporary error (retries spent), the exchange is taken as down and
# the rest are reported as not fetched, instead of spending every symbol's retries (about 8 s each) on it.
FETCH_STOP_AFTER_FAILURES = 3


def candles_fetch(
    *, exchange_client, instruments: Iterable[Instrument], timeframe: str, backfill_bars: int,
    now_ms: int | None = None, progress=None,
) -> list[FetchResult]:
    results = []
    failing: list[str] = []  # the symbols that failed in a row, temporarily
    for instrument in instruments:
        if len(failing) >= FETCH_STOP_AFTER_FAILURES:
            result = FetchResult(symbol=instrument.symbol, error=(
                f"not fetched: the exchange failed for {', '.join(failing)} in a row (temporary errors after "
                "retries); the next run fetches it"))
            results.append(result)
            if progress is not None:
                progress(result)
            continue
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
            failing = [*failing, instrument.symbol] if isinstance(exc, TemporaryExchangeError) else []
        else:
            failing = []
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
