"""The import_candles and fetch_candles management commands (the latter against the fake Bybit)."""

from __future__ import annotations

import math
import types
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from core.models import AuditEntry
from pairs.models import Candle, Instrument, Pair, StrategyConfig
from pairs.services import market_data
from tests.factories import InstrumentFactory, PairFactory
from tests.fakes.bybit import FakeBybit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_sleeps")]

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z
COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


def rows(n: int, base: float = 100.0) -> list[tuple]:
    return [(T0 + i * H, base + i, base + i + 1, base + i - 1, base + i + 0.5, 10.0 + i) for i in range(n)]


def run(*args, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------------- import_candles


@pytest.fixture
def candle_dir(tmp_path) -> Path:
    pd.DataFrame(rows(5), columns=COLUMNS).to_csv(tmp_path / "GOODAUSDT.csv", index=False)
    pd.DataFrame(rows(4, 2.0), columns=COLUMNS).to_parquet(tmp_path / "GOODBUSDT.parquet", index=False)
    return tmp_path


def test_import_candles_reports_and_is_idempotent(candle_dir):
    out, err = run("import_candles", str(candle_dir), symbols="GOODAUSDT,GOODBUSDT", timeframe="1h")

    assert out.splitlines() == [
        "GOODAUSDT: 5 bars",
        "GOODBUSDT: 4 bars",
        "2 file(s), 9 candle(s) imported (1h, bybit).",
    ]
    assert err == ""
    assert Candle.objects.count() == 9

    out, _ = run("import_candles", str(candle_dir), symbols="GOODAUSDT,GOODBUSDT", timeframe="1h")

    assert out.splitlines()[-1] == "2 file(s), 9 candle(s) imported (1h, bybit)."
    assert Candle.objects.count() == 9
    close = Candle.objects.get(instrument__symbol="GOODAUSDT", open_time=datetime(2021, 1, 1, 4, tzinfo=UTC)).close
    assert close == Decimal("104.5")


def test_import_candles_symbols_subset_other_exchange_and_quiet(candle_dir):
    out, _ = run("import_candles", str(candle_dir), symbols="goodbusdt", timeframe="1h", exchange="binance",
                 verbosity=0)  # fmt: skip

    assert out == "1 file(s), 4 candle(s) imported (1h, binance).\n"
    assert list(Instrument.objects.values_list("exchange", "symbol")) == [("binance", "GOODBUSDT")]


def test_import_candles_defaults_to_the_exchange_the_configuration_screens(candle_dir, settings):
    """The default came from STATARB_EXCHANGE: with the configuration's exchange changed in the admin, the candles
    landed under an exchange the fetch and the screening never read."""
    settings.STATARB_EXCHANGE = "bybit"
    StrategyConfig.objects.update_or_create(pk=1, defaults={"exchange": "binance"})

    out, _ = run("import_candles", str(candle_dir), symbols="GOODAUSDT", verbosity=0)

    assert out == "1 file(s), 5 candle(s) imported (1h, binance).\n"
    assert list(Instrument.objects.values_list("exchange", flat=True)) == ["binance"]


def test_import_candles_bad_file_is_named_and_the_good_ones_are_stored(candle_dir):
    bad = rows(5, 50.0)
    bad[2] = (bad[2][0], 52.0, 53.0, 51.0, math.nan, 12.0)
    pd.DataFrame(bad, columns=COLUMNS).to_csv(candle_dir / "BADUSDT.csv", index=False)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), timeframe="1h", stdout=out, stderr=err)

    assert str(info.value) == "1 file(s) rejected: BADUSDT.csv"
    assert "REJECTED BADUSDT: candles rejected:" in err.getvalue()
    assert "NaN or non-positive price at 2021-01-01T02:00:00Z" in err.getvalue()
    assert "2 file(s), 9 candle(s) imported (1h, bybit)." in out.getvalue()
    assert Candle.objects.filter(instrument__symbol="GOODAUSDT").count() == 5
    assert Candle.objects.filter(instrument__symbol="GOODBUSDT").count() == 4
    assert Candle.objects.filter(instrument__symbol="BADUSDT").count() == 0


def test_import_candles_truncated_gzip_is_named_and_the_later_files_are_imported(candle_dir, shared_candles_dir):
    whole = (shared_candles_dir / "BTCUSDT.csv.gz").read_bytes()
    truncated = candle_dir / "BTCUSDT.csv.gz"  # sorted before the good files
    truncated.write_bytes(whole[: len(whole) // 2])
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), stdout=out, stderr=err)

    assert str(info.value) == "1 file(s) rejected: BTCUSDT.csv.gz"
    assert err.getvalue() == (
        f"REJECTED {truncated}: cannot be read: Compressed file ended before the end-of-stream marker was reached "
        "(the file is truncated or corrupt)\n"
    )
    assert out.getvalue().splitlines() == ["GOODAUSDT: 5 bars", "GOODBUSDT: 4 bars",
                                           "2 file(s), 9 candle(s) imported (1h, bybit)."]  # fmt: skip
    assert not Instrument.objects.filter(symbol="BTCUSDT").exists()
    assert Candle.objects.count() == 9


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (".csv", "letters A-Z, digits, '.', '-' or '_' only, starting with a letter or digit"),
        ("GOOD AUSDT (1).csv", "letters A-Z, digits, '.', '-' or '_' only, starting with a letter or digit"),
        ("BTC\u00dcSDT.csv", "letters A-Z, digits, '.', '-' or '_' only, starting with a letter or digit"),
        ("A" * 33 + "USDT.csv", "at most 64 characters, of which 32 before the quote USDT"),
        ("B" * 65 + ".csv", "at most 64 characters, of which 32 before the quote USDT"),
    ],
)
def test_import_candles_a_file_name_that_is_no_symbol_is_rejected_and_the_others_imported(candle_dir, name,
                                                                                          problem):
    # MariaDB's strict mode raised DataError (a traceback ending the run) on a name longer than the columns; SQLite
    # stored an instrument named "" or "GOOD AUSDT (1)".
    path = candle_dir / name
    pd.DataFrame(rows(3), columns=COLUMNS).to_csv(path, index=False)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), stdout=out, stderr=err)

    assert str(info.value) == f"1 file(s) rejected: {name}"
    symbol = name[: -len(".csv")].upper()
    assert err.getvalue() == (
        f"REJECTED {path}: the file's name gives the symbol {symbol!r}, which is not a symbol ({problem})\n"
    )
    assert "2 file(s), 9 candle(s) imported (1h, bybit)." in out.getvalue()
    assert sorted(Instrument.objects.values_list("symbol", flat=True)) == ["GOODAUSDT", "GOODBUSDT"]
    assert Candle.objects.count() == 9


@pytest.mark.parametrize("name", ["ETHBTC.csv", "BTCUSD.csv", "btcusdc.csv", "USDT.csv"])
def test_import_candles_a_file_of_another_quote_is_rejected_not_stored_as_a_usdt_contract(candle_dir, name):
    # ETHBTC.csv (prices in BTC) was stored as the USDT instrument "ETHBTC", and screened and replayed with the
    # USDT contracts.
    path = candle_dir / name
    pd.DataFrame(rows(3, 0.05), columns=COLUMNS).to_csv(path, index=False)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), stdout=out, stderr=err)

    assert str(info.value) == f"1 file(s) rejected: {name}"
    symbol = name[: -len(".csv")].upper()
    assert err.getvalue() == (
        f"REJECTED {path}: the file's name gives the symbol {symbol!r}, which is no USDT contract (a linear USDT "
        "perpetual's symbol ends with USDT, like BTCUSDT): its prices would join the USDT universe in another "
        "currency\n")
    assert sorted(Instrument.objects.values_list("symbol", flat=True)) == ["GOODAUSDT", "GOODBUSDT"]


@pytest.mark.parametrize("exchange", ["", "By bit", "x" * 33])
def test_import_candles_an_exchange_that_is_no_ccxt_id_is_refused_before_anything_is_stored(candle_dir, exchange):
    with pytest.raises(CommandError) as info:
        run("import_candles", str(candle_dir), exchange=exchange)

    assert str(info.value).startswith(f"--exchange {exchange!r}: a ccxt exchange id (lower-case letters, digits")
    assert not Instrument.objects.exists()


def test_import_candles_a_file_holding_another_symbols_rows_is_rejected_and_nothing_of_it_stored(candle_dir):
    mixed = pd.DataFrame(rows(4), columns=COLUMNS)
    mixed.insert(0, "symbol", ["MIXUSDT", "MIXUSDT", "ETHUSDT", "MIXUSDT"])
    path = candle_dir / "MIXUSDT.csv"
    mixed.to_csv(path, index=False)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), stdout=out, stderr=err)

    assert str(info.value) == "1 file(s) rejected: MIXUSDT.csv"
    assert f"REJECTED {path}: column symbol names another symbol than the file's MIXUSDT in 1 row(s): row 3" in (
        err.getvalue())
    assert not Instrument.objects.filter(symbol="MIXUSDT").exists()
    assert Candle.objects.count() == 9


def test_import_candles_refuses_to_change_stored_bars_unless_overwrite(candle_dir):
    run("import_candles", str(candle_dir), verbosity=0)
    revised = rows(7)  # two new bars ...
    revised[1] = (revised[1][0], 101.0, 102.0, 100.0, 101.25, 11.0)  # ... and the close of 01:00 revised ...
    revised[3] = (revised[3][0], 103.0, 104.0, 102.0, 103.5, 99.0)  # ... and the volume of 03:00
    path = candle_dir / "GOODAUSDT.csv"
    pd.DataFrame(revised, columns=COLUMNS).to_csv(path, index=False)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), verbosity=0, stdout=out, stderr=err)

    assert str(info.value) == "1 file(s) rejected: GOODAUSDT.csv"
    assert err.getvalue().splitlines() == [
        f"REJECTED {path}: 2 stored 1h bar(s) of GOODAUSDT would change (stored -> new):",
        "  2021-01-01T01:00:00Z: close 101.5 -> 101.25",
        "  2021-01-01T03:00:00Z: volume 13 -> 99",
        "  nothing of the file was stored; --overwrite replaces the stored bars",
    ]
    assert out.getvalue() == "1 file(s), 4 candle(s) imported (1h, bybit).\n"  # GOODBUSDT: the same bars again
    good_a = Candle.objects.filter(instrument__symbol="GOODAUSDT")
    assert good_a.count() == 5
    assert good_a.get(open_time=datetime(2021, 1, 1, 1, tzinfo=UTC)).close == Decimal("101.5")

    out, err = run("import_candles", str(candle_dir), overwrite=True, verbosity=0)

    assert (out, err) == ("2 file(s), 11 candle(s) imported (1h, bybit).\n", "")
    assert good_a.count() == 7
    assert good_a.get(open_time=datetime(2021, 1, 1, 1, tzinfo=UTC)).close == Decimal("101.25")
    assert good_a.get(open_time=datetime(2021, 1, 1, 3, tzinfo=UTC)).volume == Decimal("99")
    # The replaced bars are audited, by the shell account that ran the command; the file with none changed is not.
    entry = AuditEntry.objects.get(action="overwrite_candles")
    assert (entry.channel, entry.target_id, entry.details["bars"]) == ("command", str(good_a.first().instrument_id), 2)
    assert "(manage.py import_candles)" in entry.actor_label and "GOODAUSDT.csv" in entry.summary


def test_import_candles_missing_directory(tmp_path):
    with pytest.raises(CommandError, match="no such directory") as info:
        run("import_candles", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value)


@pytest.mark.parametrize("names", [[], ["BTCUSDT.json", "ETHUSDT.zip"]])
def test_import_candles_a_directory_without_candle_files_is_an_error(tmp_path, names):
    # It answered "0 file(s), 0 candle(s) imported" and exit code 0.
    for name in names:
        (tmp_path / name).write_text("timestamp,open,high,low,close,volume\n")

    with pytest.raises(CommandError) as info:
        run("import_candles", str(tmp_path))

    assert str(info.value) == (f"{tmp_path}: no candle file (one per symbol, named like BTCUSDT.csv.gz; formats "
                               ".csv.gz, .csv, .parquet, .feather)")


def test_import_candles_a_file_without_bars_is_rejected_and_leaves_no_instrument(candle_dir):
    # A header-only file was reported as imported with 0 bars, and its instrument was created without candles.
    (candle_dir / "EMPTYUSDT.csv").write_text("timestamp,open,high,low,close,volume\n")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as info:
        call_command("import_candles", str(candle_dir), stdout=out, stderr=err)

    assert str(info.value) == "1 file(s) rejected: EMPTYUSDT.csv"
    rejected = f"REJECTED {candle_dir / 'EMPTYUSDT.csv'}: no bar to import (it holds a header and no rows)"
    assert rejected in err.getvalue()
    assert "2 file(s), 9 candle(s) imported (1h, bybit)." in out.getvalue()
    assert not Instrument.objects.filter(symbol="EMPTYUSDT").exists()


def test_import_candles_missing_symbol(candle_dir):
    with pytest.raises(CommandError, match=r"no file for symbol\(s\) XRPUSDT"):
        run("import_candles", str(candle_dir), symbols="GOODAUSDT,XRPUSDT")
    assert Candle.objects.count() == 0


def test_import_candles_real_file(shared_candles_dir):
    out, _ = run("import_candles", str(shared_candles_dir), symbols="BTCUSDT")

    assert out.splitlines() == [
        "BTCUSDT: 5482 bars; 6 gap(s), 11 missing bar(s) (first: 2020-12-21T15:00:00Z..2020-12-21T17:00:00Z, "
        "2020-12-25T02:00:00Z..2020-12-25T02:00:00Z, 2021-02-11T04:00:00Z..2021-02-11T04:00:00Z)",
        "1 file(s), 5482 candle(s) imported (1h, bybit).",
    ]
    assert Candle.objects.filter(instrument__symbol="BTCUSDT").count() == 5482


# ---------------------------------------------------------------------------------------------------- fetch_candles

NOW_MS = 1_704_067_200_000 + 500 * H + 20 * 60_000  # 2024-01-21T20:20Z: the 20:00 bar is open
OPEN_BAR = NOW_MS // H * H






@pytest.fixture
def fixed_now(monkeypatch):
    """The market-data service's clock, frozen at NOW_MS (the commands take 'now' from it)."""
    frozen = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)
    monkeypatch.setattr(market_data, "timezone", types.SimpleNamespace(now=lambda: frozen))


def fake_bars(first: int, last: int) -> list[tuple]:
    """Bars opening ``first``..``last`` hours before the open bar (so 0 is the open one)."""
    return [(OPEN_BAR - k * H, "10.5", "11", "10", f"10.{k:03d}", "3") for k in range(last, first - 1, -1)]


@pytest.fixture
def fake(settings, fixed_now):
    with FakeBybit() as server:
        server.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                              price="42000", turnover_24h="2000000000")  # fmt: skip
        server.add_instrument("ETHUSDT", base="ETH", tick_size="0.01", qty_step="0.01", min_qty="0.01",
                              price="2500", turnover_24h="900000000")  # fmt: skip
        server.add_instrument("LOWUSDT", base="LOW", tick_size="0.0001", qty_step="1", min_qty="1", price="0.5",
                              turnover_24h="1000")  # fmt: skip
        for symbol in ("BTCUSDT", "ETHUSDT", "LOWUSDT"):
            server.set_candles(symbol, "1h", fake_bars(0, 100))
        settings.STATARB_MARKET_DATA_URL = server.base_url
        settings.STATARB_EXCHANGE_RATE_LIMIT = False
        settings.STATARB_EXCHANGE_TIMEOUT_MS = 2000
        config = StrategyConfig.current()
        config.backfill_bars = 48
        config.save()
        yield server
    assert server.errors == []


def test_fetch_candles_refreshes_the_universe_and_stores_closed_bars(fake):
    out, err = run("fetch_candles", verbosity=0)

    assert out.splitlines() == ["universe: 3 new, 0 updated, 0 delisted", "96 candle(s) stored for 2 symbol(s)."]
    assert err == ""
    assert set(Instrument.objects.values_list("symbol", flat=True)) == {"BTCUSDT", "ETHUSDT", "LOWUSDT"}
    assert Instrument.objects.get(symbol="ETHUSDT").tick_size == Decimal("0.01")
    counts = dict(Candle.objects.values("instrument__symbol").annotate(n=Count("id")).values_list(
        "instrument__symbol", "n"))  # fmt: skip
    assert counts == {"BTCUSDT": 48, "ETHUSDT": 48}  # LOWUSDT trades too little to be in the universe
    newest = Candle.objects.filter(instrument__symbol="BTCUSDT").latest("open_time")
    assert newest.open_time == datetime.fromtimestamp((OPEN_BAR - H) / 1000, tz=UTC)
    assert newest.close == Decimal("10.001")

    out, _ = run("fetch_candles", verbosity=0)

    assert out.splitlines() == ["universe: 0 new, 0 updated, 0 delisted", "0 candle(s) stored for 2 symbol(s)."]
    assert Candle.objects.count() == 96


def test_fetch_candles_keeps_fetching_the_legs_of_active_pairs_that_left_the_universe(fake):
    """An active pair's leg whose turnover fell below the universe's minimum (or that a person excluded) still gets
    its bars: the pair's signals, and the exit of a trade open on it, read them (without them its signals stop, the
    guard halts the account on stale data, and the maintenance suspends, then retires the pair). A suspended pair's
    legs too: fresh bars are what resumes it. A leg the exchange no longer trades is not asked for."""
    run("fetch_candles", verbosity=0)
    low, btc = Instrument.objects.get(symbol="LOWUSDT"), Instrument.objects.get(symbol="BTCUSDT")
    PairFactory(y_instrument=btc, x_instrument=low)
    eth = Instrument.objects.get(symbol="ETHUSDT")
    eth.excluded = True
    eth.save()
    PairFactory(y_instrument=eth, x_instrument=btc, status=Pair.Status.SUSPENDED)  # suspended for its stale leg
    gone = InstrumentFactory(symbol="GONEUSDT", status=Instrument.Status.DELISTED)
    PairFactory(y_instrument=btc, x_instrument=gone)

    out, err = run("fetch_candles", skip_universe=True, verbosity=0)

    assert (out.splitlines(), err) == (["48 candle(s) stored for 3 symbol(s)."], "")
    counts = dict(Candle.objects.values("instrument__symbol").annotate(n=Count("id")).values_list(
        "instrument__symbol", "n"))  # fmt: skip
    assert counts == {"BTCUSDT": 48, "ETHUSDT": 48, "LOWUSDT": 48}


def test_fetch_candles_for_named_symbols_without_universe_refresh(fake):
    run("fetch_candles", verbosity=0)
    fake.add_instrument("NEWUSDT", base="NEW", tick_size="0.01", qty_step="1", min_qty="1", price="1",
                        turnover_24h="100000000")  # fmt: skip

    out, _ = run("fetch_candles", symbols="lowusdt", skip_universe=True, verbosity=0)

    assert out.splitlines() == ["48 candle(s) stored for 1 symbol(s)."]
    assert Candle.objects.filter(instrument__symbol="LOWUSDT").count() == 48
    assert not Instrument.objects.filter(symbol="NEWUSDT").exists()


def test_fetch_candles_unknown_symbol(fake):
    with pytest.raises(CommandError, match=r"unknown symbol\(s\) on bybit: NOPEUSDT"):
        run("fetch_candles", symbols="BTCUSDT,NOPEUSDT", verbosity=0)
    assert Candle.objects.count() == 0


def test_fetch_candles_instruments_info_failing_is_a_clear_error(fake, retry_sleeps):
    fake.http_error_next("/v5/market/instruments-info", 500, times=5)

    with pytest.raises(CommandError) as info:
        run("fetch_candles", verbosity=0)

    message = str(info.value)
    assert message.startswith("could not load instruments from bybit: ExchangeNotAvailable: ")
    assert "500 Internal Server Error" in message
    assert len(retry_sleeps) == 4  # five attempts, then it gives up
    assert len(fake.requests_to("/v5/market/instruments-info")) == 5
    assert Instrument.objects.count() == 0
    assert Candle.objects.count() == 0


def test_fetch_candles_a_failing_symbol_is_reported_and_the_others_stored(fake):
    fake.fail_next("/v5/market/kline", 10001, "params error: bad request", symbol="ETHUSDT")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match=r"^1 symbol\(s\) failed$"):
        call_command("fetch_candles", verbosity=0, stdout=out, stderr=err)

    assert "48 candle(s) stored for 2 symbol(s)." in out.getvalue()
    assert err.getvalue().startswith("ETHUSDT: BadRequest: bybit ")
    assert "10001" in err.getvalue()
    assert Candle.objects.filter(instrument__symbol="BTCUSDT").count() == 48
    assert Candle.objects.filter(instrument__symbol="ETHUSDT").count() == 0


def test_fetch_candles_unknown_timeframe_is_refused_before_the_exchange_is_asked(fake):
    # --timeframe 7h was taken: with no symbol stored the command answered "0 candle(s) stored" and exit code 0.
    with pytest.raises(CommandError) as info:
        run("fetch_candles", "--timeframe", "7h", "--skip-universe")

    assert str(info.value).startswith("Error: argument --timeframe: invalid choice: '7h' (choose from '1m', '3m',")
    assert fake.requests == []
