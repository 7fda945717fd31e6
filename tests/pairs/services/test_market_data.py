"""Market-data writes: file import, instrument sync, and universe/candle fetch against the fake Bybit (the candle
upsert itself: test_candles.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from exchanges.ccxt_client import CcxtExchange, build_ccxt_client
from exchanges.errors import ExchangeError
from exchanges.specs import InstrumentSpec
from pairs.marketdata.files import CandleFileError
from pairs.models import Candle, Instrument
from pairs.services.market_data import (
    candles_fetch,
    candles_import_directory,
    candles_upsert,
    instrument_get_or_create_for_import,
    instruments_sync,
    last_candle_time,
    universe_refresh,
)
from tests.factories import InstrumentFactory
from tests.fakes.bybit import FakeBybit
from tests.pairs.services.test_candles import as_stored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_sleeps")]

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z
COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
KLINE = "/v5/market/kline"


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def candles_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def stored(instrument: Instrument, timeframe: str = "1h") -> list[tuple]:
    return list(
        Candle.objects.filter(instrument=instrument, timeframe=timeframe)
        .order_by("open_time")
        .values_list("open_time", "open", "high", "low", "close", "volume")
    )


def file_rows(n: int, *, start: int = T0, base: float = 100.0) -> list[tuple]:
    return [(start + i * H, base + i, base + i + 1, base + i - 1, base + i + 0.5, 10.0 + i) for i in range(n)]






# ---------------------------------------------------------------------------------------------------- file import


@pytest.fixture
def import_dir(tmp_path) -> Path:
    candles_frame(file_rows(5)).to_csv(tmp_path / "GOODAUSDT.csv", index=False)
    candles_frame(file_rows(4, base=2.0)).to_csv(tmp_path / "GOODBUSDT.csv.gz", index=False, compression="gzip")
    bad = file_rows(5, base=50.0)
    bad[2] = (bad[2][0], 52.0, 53.0, 51.0, math.nan, 12.0)  # NaN close at 02:00, in the middle
    candles_frame(bad).to_csv(tmp_path / "BADUSDT.csv", index=False)
    return tmp_path


def test_import_stores_the_good_files_and_nothing_of_the_bad_one(import_dir):
    seen = []

    summary = candles_import_directory(
        directory=import_dir, timeframe="1h", exchange="bybit", progress=lambda r: seen.append(r.symbol)
    )

    assert seen == ["BADUSDT", "GOODAUSDT", "GOODBUSDT"]
    assert summary.rows == 9
    assert [f.symbol for f in summary.failed] == ["BADUSDT"]
    error = summary.failed[0].error
    assert error.startswith("BADUSDT: candles rejected:")
    assert "NaN or non-positive price at 2021-01-01T02:00:00Z" in error

    good_a = Instrument.objects.get(exchange="bybit", symbol="GOODAUSDT")
    assert (good_a.base, good_a.quote, good_a.ccxt_symbol) == ("GOODA", "USDT", "GOODA/USDT:USDT")
    rows = stored(good_a)
    assert len(rows) == 5
    assert rows[4] == (utc(T0 + 4 * H), Decimal("104"), Decimal("105"), Decimal("103"), Decimal("104.5"),
                       Decimal("14"))  # fmt: skip
    assert len(stored(Instrument.objects.get(symbol="GOODBUSDT"))) == 4
    assert Candle.objects.filter(instrument__symbol="BADUSDT").count() == 0
    assert not Instrument.objects.filter(symbol="BADUSDT").exists()
    reports = {f.symbol: f.report for f in summary.files}
    assert reports["GOODAUSDT"].rows_out == 5
    assert reports["BADUSDT"] is None


def test_a_rejected_file_leaves_earlier_bars_of_its_symbol_untouched(import_dir):
    instrument = instrument_get_or_create_for_import(exchange="bybit", symbol="BADUSDT")
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame([(T0 + H, 7.0, 8.0, 6.0, 7.5, 1.0)]))

    summary = candles_import_directory(directory=import_dir, timeframe="1h", exchange="bybit", symbols=["BADUSDT"])

    assert summary.rows == 0
    assert len(summary.failed) == 1
    assert stored(instrument) == [
        (utc(T0 + H), Decimal("7"), Decimal("8"), Decimal("6"), Decimal("7.5"), Decimal("1"))
    ]


def test_unreadable_files_are_reported_by_name_and_the_others_imported(import_dir, shared_candles_dir):
    whole = (shared_candles_dir / "BTCUSDT.csv.gz").read_bytes()
    (import_dir / "BTCUSDT.csv.gz").write_bytes(whole[: len(whole) // 3])  # truncated, before the good files
    (import_dir / "BTCUSDT.csv").unlink(missing_ok=True)
    candles_frame(file_rows(3)).drop(columns=["volume"]).to_csv(import_dir / "NOVOLUSDT.csv", index=False)
    (import_dir / "PARQUSDT.parquet").write_bytes(b"PAR1 but nothing more")
    (import_dir / "ZZZUSDT.csv").write_bytes(b"timestamp,open,high,low,close,volume\n\x00\xff\xfe,1,2")

    summary = candles_import_directory(directory=import_dir, timeframe="1h", exchange="bybit")

    errors = {f.symbol: f.error for f in summary.failed}
    assert set(errors) == {"BADUSDT", "BTCUSDT", "NOVOLUSDT", "PARQUSDT", "ZZZUSDT"}
    for symbol in ("BTCUSDT", "NOVOLUSDT", "PARQUSDT", "ZZZUSDT"):
        path = next(f.path for f in summary.files if f.symbol == symbol)
        assert errors[symbol].startswith(f"{path}: "), errors[symbol]
    assert errors["BTCUSDT"].endswith("(the file is truncated or corrupt)")
    assert errors["NOVOLUSDT"].endswith("missing column(s) volume")
    assert summary.rows == 9  # the two good files, after the bad ones
    assert set(Instrument.objects.values_list("symbol", flat=True)) == {"GOODAUSDT", "GOODBUSDT"}
    assert Candle.objects.count() == 9


def test_a_file_that_would_change_stored_bars_is_refused_whole(import_dir):
    candles_import_directory(directory=import_dir, timeframe="1h", exchange="bybit", symbols=["GOODAUSDT"])
    good_a = Instrument.objects.get(symbol="GOODAUSDT")
    before = stored(good_a)
    revised = file_rows(6)  # one new bar at 05:00 ...
    revised[2] = (T0 + 2 * H, 102.0, 103.0, 101.0, 102.75, 12.0)  # ... and the close of 02:00 revised
    path = import_dir / "GOODAUSDT.csv"
    candles_frame(revised).to_csv(path, index=False)

    summary = candles_import_directory(directory=import_dir, timeframe="1h", exchange="bybit",
                                       symbols=["GOODAUSDT", "GOODBUSDT"])  # fmt: skip

    refused, other = summary.files
    assert refused.error == (
        f"{path}: 1 stored 1h bar(s) of GOODAUSDT would change (stored -> new):\n"
        "  2021-01-01T02:00:00Z: close 102.5 -> 102.75"
    )
    assert (refused.rows, refused.differing_bars) == (0, 1)
    assert stored(good_a) == before  # neither the revision nor the new bar
    assert (other.error, other.rows) == ("", 4)

    summary = candles_import_directory(directory=import_dir, timeframe="1h", exchange="bybit",
                                       symbols=["GOODAUSDT"], overwrite=True)  # fmt: skip

    assert summary.failed == [] and summary.rows == 6
    assert stored(good_a) == as_stored(revised)


def test_import_of_a_missing_symbol_raises_before_anything_is_stored(import_dir):
    with pytest.raises(CandleFileError, match="no file for symbol"):
        candles_import_directory(directory=import_dir, timeframe="1h", exchange="bybit",
                                 symbols=["GOODAUSDT", "NOPEUSDT"])  # fmt: skip
    assert Candle.objects.count() == 0


def test_import_of_the_real_subset_twice_stores_each_bar_once(shared_candles_dir):
    for _ in range(2):
        summary = candles_import_directory(
            directory=shared_candles_dir, timeframe="1h", exchange="bybit", symbols=["BTCUSDT", "ETHUSDT"]
        )
        assert summary.failed == []
        assert summary.rows == 2 * 5482
        assert (summary.files[0].report.gaps, summary.files[0].report.missing_bars) == (6, 11)

    assert Candle.objects.count() == 2 * 5482
    btc = Instrument.objects.get(exchange="bybit", symbol="BTCUSDT")
    assert Candle.objects.filter(instrument=btc).count() == 5482
    assert last_candle_time(instrument=btc, timeframe="1h") == datetime(2021, 7, 17, 20, tzinfo=UTC)
    last = stored(btc)[-1]
    assert last[1:] == (Decimal("31834.33"), Decimal("31898.5"), Decimal("31723.08"), Decimal("31723.09"),
                        Decimal("831.839377"))  # fmt: skip
    assert stored(btc)[0][0] == datetime(2020, 12, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------- instrument sync


def spec(symbol: str, **overrides) -> InstrumentSpec:
    base = symbol.removesuffix("USDT")
    values = {
        "symbol": symbol, "base": base, "quote": "USDT", "settle": "USDT", "ccxt_symbol": f"{base}/USDT:USDT",
        "tick_size": Decimal("0.01"), "qty_step": Decimal("0.001"), "min_qty": Decimal("0.001"),
        "max_qty": Decimal("1000"), "min_notional": Decimal("5"), "funding_interval_minutes": 480,
        "listed_at": datetime(2020, 3, 30, tzinfo=UTC), "turnover_24h": Decimal("12000000"),
    }  # fmt: skip
    values.update(overrides)
    return InstrumentSpec(**values)


def test_sync_creates_updates_and_delists():
    result = instruments_sync(exchange="bybit", specs=[spec("BTCUSDT"), spec("ETHUSDT"), spec("SOLUSDT")])
    assert sorted(result.created) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    eth = Instrument.objects.get(exchange="bybit", symbol="ETHUSDT")
    assert (eth.tick_size, eth.min_notional, eth.turnover_24h) == (Decimal("0.01"), Decimal("5"), Decimal("12000000"))
    assert eth.status == Instrument.Status.TRADING

    result = instruments_sync(
        exchange="bybit",
        specs=[spec("BTCUSDT", tick_size=Decimal("0.1")), spec("ETHUSDT", active=False)],
        complete=True,
    )

    assert result.created == []
    assert sorted(result.updated) == ["BTCUSDT", "ETHUSDT"]
    assert sorted(result.delisted) == ["ETHUSDT", "SOLUSDT"]
    by_symbol = {i.symbol: i for i in Instrument.objects.filter(exchange="bybit")}
    assert by_symbol["BTCUSDT"].tick_size == Decimal("0.1")
    assert by_symbol["BTCUSDT"].status == Instrument.Status.TRADING
    for symbol in ("ETHUSDT", "SOLUSDT"):
        assert by_symbol[symbol].status == Instrument.Status.DELISTED
        assert by_symbol[symbol].delisted_at is not None


def test_sync_without_changes_writes_nothing():
    instruments_sync(exchange="bybit", specs=[spec("BTCUSDT")])
    result = instruments_sync(exchange="bybit", specs=[spec("BTCUSDT")])
    assert (result.created, result.updated, result.delisted) == ([], [], [])


def test_incomplete_sync_leaves_missing_instruments_alone():
    instruments_sync(exchange="bybit", specs=[spec("BTCUSDT"), spec("ETHUSDT")])

    result = instruments_sync(exchange="bybit", specs=[spec("BTCUSDT")], complete=False)

    assert result.delisted == []
    assert Instrument.objects.get(symbol="ETHUSDT").status == Instrument.Status.TRADING


def test_sync_keeps_the_admins_exclusion_other_exchanges_and_known_turnover():
    instruments_sync(exchange="bybit", specs=[spec("BTCUSDT")])
    Instrument.objects.filter(symbol="BTCUSDT").update(excluded=True, exclusion_reason="manipulated")
    other = InstrumentFactory(exchange="binance", symbol="XRPUSDT", base="XRP")

    result = instruments_sync(exchange="bybit", specs=[spec("BTCUSDT", min_qty=Decimal("0.01"), turnover_24h=None)])

    assert result.updated == ["BTCUSDT"]
    btc = Instrument.objects.get(exchange="bybit", symbol="BTCUSDT")
    assert (btc.excluded, btc.exclusion_reason) == (True, "manipulated")
    assert btc.min_qty == Decimal("0.01")
    assert btc.turnover_24h == Decimal("12000000")  # an unknown turnover does not erase the known one
    other.refresh_from_db()
    assert other.status == Instrument.Status.TRADING


# ---------------------------------------------------------------------------------------------------- the fake Bybit


@pytest.fixture
def fake():
    with FakeBybit() as server:
        yield server
    assert server.errors == []


def client_for(fake: FakeBybit) -> CcxtExchange:
    return CcxtExchange(build_ccxt_client("bybit", base_url=fake.base_url, enable_rate_limit=False, timeout_ms=2000))


def seed_universe(fake: FakeBybit) -> None:
    fake.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                        min_notional="5", max_qty="500", price="50000", turnover_24h="2000000000.5")  # fmt: skip
    fake.add_instrument("PEPEUSDT", base="PEPE", tick_size="0.0000001", qty_step="100", min_qty="100",
                        min_notional="1", funding_interval_minutes=240, price="0.0000123",
                        turnover_24h="12345.678", launch_time_ms=1_683_000_000_000)  # fmt: skip
    fake.add_instrument("OLDUSDT", base="OLD", tick_size="0.001", qty_step="1", min_qty="1", price="2",
                        turnover_24h="750000")  # fmt: skip
    fake.add_instrument("BTCPERP", base="BTC", quote="USDC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                        price="50000", turnover_24h="1000")  # fmt: skip


def test_universe_refresh_stores_filters_and_turnover_as_decimals(fake):
    seed_universe(fake)

    result = universe_refresh(exchange_client=client_for(fake), exchange="bybit", quote="USDT")

    assert sorted(result.created) == ["BTCUSDT", "OLDUSDT", "PEPEUSDT"]  # the USDC-settled one is not ours
    pepe = Instrument.objects.get(exchange="bybit", symbol="PEPEUSDT")
    assert (pepe.base, pepe.quote, pepe.settle, pepe.ccxt_symbol) == ("PEPE", "USDT", "USDT", "PEPE/USDT:USDT")
    assert pepe.tick_size == Decimal("0.0000001")
    assert pepe.qty_step == Decimal("100")
    assert pepe.min_qty == Decimal("100")
    assert pepe.min_notional == Decimal("1")
    assert pepe.funding_interval_minutes == 240
    assert pepe.turnover_24h == Decimal("12345.678")
    assert pepe.listed_at == datetime.fromtimestamp(1_683_000_000, tz=UTC)
    assert pepe.status == Instrument.Status.TRADING
    btc = Instrument.objects.get(exchange="bybit", symbol="BTCUSDT")
    assert (btc.tick_size, btc.qty_step, btc.min_qty, btc.max_qty, btc.min_notional) == (
        Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("500"), Decimal("5"),
    )  # fmt: skip
    assert btc.funding_interval_minutes == 480
    assert btc.turnover_24h == Decimal("2000000000.5")
    assert not Instrument.objects.filter(symbol="BTCPERP").exists()

    again = universe_refresh(exchange_client=client_for(fake), exchange="bybit", quote="USDT")
    assert (again.created, again.updated, again.delisted) == ([], [], [])


def test_universe_refresh_marks_delisted_instruments(fake):
    seed_universe(fake)
    universe_refresh(exchange_client=client_for(fake), exchange="bybit", quote="USDT")
    Instrument.objects.filter(symbol="BTCUSDT").update(excluded=True, exclusion_reason="by hand")

    fake.delist("OLDUSDT")  # still listed, status Closed
    fake.delist("PEPEUSDT", hidden=True)  # gone from the list altogether
    fake.set_ticker("BTCUSDT", turnover_24h="3000000000")
    result = universe_refresh(exchange_client=client_for(fake), exchange="bybit", quote="USDT")

    assert sorted(result.delisted) == ["OLDUSDT", "PEPEUSDT"]
    statuses = dict(Instrument.objects.values_list("symbol", "status"))
    assert statuses == {"BTCUSDT": "trading", "OLDUSDT": "delisted", "PEPEUSDT": "delisted"}
    assert Instrument.objects.get(symbol="OLDUSDT").delisted_at is not None
    btc = Instrument.objects.get(symbol="BTCUSDT")
    assert btc.turnover_24h == Decimal("3000000000")
    assert (btc.excluded, btc.exclusion_reason) == (True, "by hand")


def test_an_unreadable_instrument_list_delists_nothing(fake, retry_sleeps):
    """A maintenance page answered with 200 is not an empty universe: the refresh fails (after its retries) and every
    instrument keeps its status."""
    seed_universe(fake)
    universe_refresh(exchange_client=client_for(fake), exchange="bybit", quote="USDT")
    fake.http_error_next("/v5/market/instruments-info", 200, body="<html>Maintenance</html>", times=5)

    with pytest.raises(ExchangeError, match="an answer that can't be read"):
        universe_refresh(exchange_client=client_for(fake), exchange="bybit", quote="USDT")

    assert len(retry_sleeps) == 4
    assert set(Instrument.objects.values_list("status", flat=True)) == {Instrument.Status.TRADING}


def hourly_rows(first: int, last: int) -> list[tuple]:
    """Bars number first..last (inclusive), bar i opening at T0 + i hours, with values derived from i."""
    return [(T0 + i * H, f"{1000 + i}.5", f"{1001 + i}", f"{999 + i}", f"{1000 + i}.25", f"{i}.125")
            for i in range(first, last + 1)]  # fmt: skip


@pytest.fixture
def btc(fake) -> Instrument:
    fake.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001", price="50000")
    return InstrumentFactory(symbol="BTCUSDT", base="BTC", ccxt_symbol="BTC/USDT:USDT")


def kline_starts(fake: FakeBybit, symbol: str | None = None) -> list[int]:
    match = {"symbol": symbol} if symbol else {}
    return [int(r.params["start"]) for r in fake.requests_to(KLINE, **match)]


def test_fetch_pages_through_all_closed_bars_then_resumes_from_the_last_one(fake, btc, retry_sleeps):
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 2499))
    now = T0 + 2499 * H + 30 * 60_000  # bar 2499 is still open

    [result] = candles_fetch(exchange_client=client_for(fake), instruments=[btc], timeframe="1h",
                             backfill_bars=3000, now_ms=now)  # fmt: skip

    assert (result.symbol, result.rows, result.error) == ("BTCUSDT", 2499, "")
    assert result.requests == 3
    backfill_start = T0 - 501 * H  # 3000 bars before the open bar, earlier than the fake's history
    assert kline_starts(fake) == [backfill_start, T0 + 1000 * H, T0 + 2000 * H]  # oldest first
    assert Candle.objects.filter(instrument=btc).count() == 2499
    assert last_candle_time(instrument=btc, timeframe="1h") == utc(T0 + 2498 * H)
    assert not Candle.objects.filter(instrument=btc, open_time=utc(T0 + 2499 * H)).exists()
    sample = Candle.objects.get(instrument=btc, open_time=utc(T0 + 1234 * H))
    assert (sample.open, sample.high, sample.low, sample.close, sample.volume) == (
        Decimal("2234.5"), Decimal("2235"), Decimal("2233"), Decimal("2234.25"), Decimal("1234.125"),
    )  # fmt: skip
    assert retry_sleeps == []

    fake.add_candles("BTCUSDT", "1h", hourly_rows(2499, 2502))  # 2499 closes; 2502 is the new open bar
    fake.clear_requests()
    [result] = candles_fetch(exchange_client=client_for(fake), instruments=[btc], timeframe="1h",
                             backfill_bars=3000, now_ms=T0 + 2502 * H + 1)  # fmt: skip

    assert (result.rows, result.requests, result.error) == (3, 1, "")
    assert kline_starts(fake) == [T0 + 2498 * H]  # the newest stored bar is read again with the new ones
    assert Candle.objects.filter(instrument=btc).count() == 2502
    assert last_candle_time(instrument=btc, timeframe="1h") == utc(T0 + 2501 * H)


def test_the_newest_stored_bar_is_read_again_and_corrected(fake, btc):
    """Fetched moments after its close, a bar can lack its last trades; the exchange's later version replaces it."""
    early = hourly_rows(0, 9)
    early[9] = (T0 + 9 * H, "1009.5", "1010", "1008", "1009.25", "0.5")  # bar 9 as first seen: little volume
    fake.set_candles("BTCUSDT", "1h", early)
    client = client_for(fake)
    candles_fetch(exchange_client=client, instruments=[btc], timeframe="1h", backfill_bars=10, now_ms=T0 + 10 * H)
    assert Candle.objects.get(instrument=btc, open_time=utc(T0 + 9 * H)).volume == Decimal("0.5")

    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 12))  # bar 9 in full (volume 9.125, a late print), 10 to 12
    fake.clear_requests()
    [result] = candles_fetch(exchange_client=client, instruments=[btc], timeframe="1h", backfill_bars=10,
                             now_ms=T0 + 12 * H + 1)  # fmt: skip

    assert (result.rows, result.requests, result.error) == (2, 1, "")  # the new bars 10 and 11 (9 re-read)
    bar9 = Candle.objects.get(instrument=btc, open_time=utc(T0 + 9 * H))
    assert (bar9.high, bar9.volume) == (Decimal("1010"), Decimal("9.125"))
    assert kline_starts(fake) == [T0 + 9 * H]


def test_fetch_with_nothing_new_makes_no_request(fake, btc):
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 9))
    client = client_for(fake)
    candles_fetch(exchange_client=client, instruments=[btc], timeframe="1h", backfill_bars=5, now_ms=T0 + 10 * H)
    assert Candle.objects.filter(instrument=btc).count() == 5
    fake.clear_requests()

    [result] = candles_fetch(exchange_client=client, instruments=[btc], timeframe="1h", backfill_bars=5,
                             now_ms=T0 + 10 * H + 59 * 60_000)  # fmt: skip

    assert (result.rows, result.requests) == (0, 0)
    assert kline_starts(fake) == []


@pytest.mark.parametrize("fault", ["http_502", "rate_limit"])
def test_a_temporary_error_is_retried_and_the_fetch_succeeds(fake, btc, retry_sleeps, fault):
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 20))
    if fault == "http_502":
        fake.http_error_next(KLINE, 502)
    else:
        fake.rate_limit_next(KLINE)

    [result] = candles_fetch(exchange_client=client_for(fake), instruments=[btc], timeframe="1h",
                             backfill_bars=20, now_ms=T0 + 20 * H + 1)  # fmt: skip

    assert (result.rows, result.error) == (20, "")
    assert result.requests == 1  # one page, once it got through
    assert len(retry_sleeps) == 1
    assert 0.375 <= retry_sleeps[0] <= 0.625  # the first backoff step, 0.5 s with jitter
    assert kline_starts(fake) == [T0, T0]  # the same request, sent again
    assert fake.pending_faults() == []


def test_an_exchange_down_for_three_symbols_in_a_row_ends_the_fetch(fake, btc, retry_sleeps):
    """Every symbol spends its retries (about 8 s) on an exchange that is down: 500 symbols took over an hour to
    fail. After three in a row the rest are reported as not fetched, without a request."""
    symbols = ["BTCUSDT"]
    instruments = [btc]
    for base in ("ETH", "SOL", "XRP", "ADA"):
        fake.add_instrument(f"{base}USDT", base=base, tick_size="0.01", qty_step="0.01", min_qty="0.01", price="10")
        instruments.append(InstrumentFactory(symbol=f"{base}USDT", base=base, ccxt_symbol=f"{base}/USDT:USDT"))
        symbols.append(f"{base}USDT")
    for symbol in symbols:
        fake.set_candles(symbol, "1h", hourly_rows(0, 10))
    fake.http_error_next(KLINE, 502, times=1000)

    results = candles_fetch(exchange_client=client_for(fake), instruments=instruments, timeframe="1h",
                            backfill_bars=10, now_ms=T0 + 10 * H + 1)  # fmt: skip

    assert [r.symbol for r in results] == symbols and all(r.error and r.rows == 0 for r in results)
    assert {r.params["symbol"] for r in fake.requests_to(KLINE)} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert results[3].error == ("not fetched: the exchange failed for BTCUSDT, ETHUSDT, SOLUSDT in a row (temporary "
                                "errors after retries); the next run fetches it")
    assert not Candle.objects.exists()


def test_a_symbol_that_gets_through_resets_the_count_of_failures(fake, btc, retry_sleeps):
    eth = InstrumentFactory(symbol="ETHUSDT", base="ETH", ccxt_symbol="ETH/USDT:USDT")
    fake.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="3000")
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 10))
    fake.set_candles("ETHUSDT", "1h", hourly_rows(0, 10))
    instruments = [btc, btc, eth, btc, btc, eth]  # two failures, one through, two failures: never three in a row
    fake.http_error_next(KLINE, 502, times=1000, symbol="BTCUSDT")  # BTCUSDT is down, ETHUSDT answers

    results = candles_fetch(exchange_client=client_for(fake), instruments=instruments, timeframe="1h",
                            backfill_bars=10, now_ms=T0 + 10 * H + 1)  # fmt: skip

    assert [bool(r.error) for r in results] == [True, True, False, True, True, False]
    assert not results[-1].error.startswith("not fetched")


def test_a_permanent_error_fails_one_symbol_and_the_others_are_fetched(fake, btc, retry_sleeps):
    fake.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="3000")
    eth = InstrumentFactory(symbol="ETHUSDT", base="ETH", ccxt_symbol="ETH/USDT:USDT")
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 10))
    fake.set_candles("ETHUSDT", "1h", hourly_rows(0, 10))
    fake.fail_next(KLINE, 10001, "params error: something invalid", symbol="BTCUSDT")
    seen = []

    results = candles_fetch(exchange_client=client_for(fake), instruments=[btc, eth], timeframe="1h",
                            backfill_bars=10, now_ms=T0 + 10 * H + 1, progress=seen.append)  # fmt: skip

    assert [r.symbol for r in results] == ["BTCUSDT", "ETHUSDT"]
    assert seen == results
    failed, ok = results
    assert failed.rows == 0
    assert "10001" in failed.error and "params error: something invalid" in failed.error
    assert (ok.rows, ok.error) == (10, "")
    assert Candle.objects.filter(instrument=btc).count() == 0
    assert Candle.objects.filter(instrument=eth).count() == 10
    assert retry_sleeps == []  # never retried
    assert len(kline_starts(fake, "BTCUSDT")) == 1


def test_fetched_bars_that_fail_validation_are_not_stored(fake, btc):
    rows = hourly_rows(0, 5)
    rows[3] = (rows[3][0], "1000", "990", "1010", "1000", "1")  # high below low
    fake.set_candles("BTCUSDT", "1h", rows)

    [result] = candles_fetch(exchange_client=client_for(fake), instruments=[btc], timeframe="1h",
                             backfill_bars=6, now_ms=T0 + 6 * H)  # fmt: skip

    assert result.rows == 0
    assert "high below low at 2021-01-01T03:00:00Z" in result.error
    assert result.error.startswith("BTCUSDT: candles rejected")
    assert Candle.objects.filter(instrument=btc).count() == 0


def test_fetch_of_an_instrument_the_exchange_does_not_know_is_reported(fake, btc):
    imported = instrument_get_or_create_for_import(exchange="bybit", symbol="GONEUSDT")
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 3))

    gone, ok = candles_fetch(exchange_client=client_for(fake), instruments=[imported, btc], timeframe="1h",
                             backfill_bars=3, now_ms=T0 + 3 * H)  # fmt: skip

    assert gone.symbol == "GONEUSDT" and gone.rows == 0 and "GONE/USDT:USDT" in gone.error
    assert ok.rows == 3


def test_backfill_starts_backfill_bars_before_now(fake, btc):
    fake.set_candles("BTCUSDT", "1h", hourly_rows(0, 100))
    now = T0 + 100 * H + 5

    [result] = candles_fetch(exchange_client=client_for(fake), instruments=[btc], timeframe="1h",
                             backfill_bars=24, now_ms=now)  # fmt: skip

    assert result.rows == 24
    assert kline_starts(fake) == [T0 + 76 * H]
    times = list(Candle.objects.filter(instrument=btc).order_by("open_time").values_list("open_time", flat=True))
    assert times[0] == utc(T0 + 76 * H) and times[-1] == utc(T0 + 99 * H)
    assert times == [utc(T0 + 76 * H) + timedelta(hours=i) for i in range(24)]
