"""Candle writes: the bulk upsert (SQLite and MySQL/MariaDB statements), and its refusal to change stored bars
(``overwrite=False``), on both backends alike."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from pairs.models import Candle, Instrument
from pairs.services import candles
from pairs.services.candles import StoredCandlesDifferError, candles_upsert
from tests.factories import InstrumentFactory

pytestmark = pytest.mark.django_db

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z
COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


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


def comparisons(queries) -> list[str]:
    """The statements of the stored-bars check that compare a chunk with the stored bars."""
    return [q["sql"] for q in queries if "COUNT(*) OVER ()" in q["sql"]]


def as_stored(rows: list[tuple]) -> list[tuple]:
    """What ``stored`` reads back for candle rows given as floats."""
    return [(utc(t), *(Decimal(repr(x)) for x in values)) for t, *values in rows]


@pytest.fixture(params=[3, 10_000], ids=["chunks of 3", "one chunk"])
def batch_rows(request, monkeypatch) -> int:
    """Both the one-statement case and batches split into chunks (some new, some stored, some both)."""
    monkeypatch.setattr(candles, "UPSERT_BATCH_ROWS", request.param)
    return request.param


# ---------------------------------------------------------------------------------------------------- upsert


def test_upsert_twice_stores_each_bar_once_and_updates_changed_values():
    instrument = InstrumentFactory(symbol="PEPEUSDT", base="PEPE")
    first = candles_frame(
        [
            (T0, 0.00012, 0.000125, 0.000119, 0.00012345, 1234567890.5),
            (T0 + H, 0.00012345, 0.00013, 0.00012, 0.000129, 0.0),
            (T0 + 2 * H, 0.00001234, 0.000013, 0.000012, 0.0000125, 42.0),  # repr uses exponent notation
        ]
    )

    assert candles_upsert(instrument=instrument, timeframe="1h", candles=first) == 3
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=first) == 3

    rows = stored(instrument)
    assert len(rows) == 3
    assert rows[0] == (
        utc(T0), Decimal("0.00012"), Decimal("0.000125"), Decimal("0.000119"), Decimal("0.00012345"),
        Decimal("1234567890.5"),
    )  # fmt: skip
    assert rows[1][4] == Decimal("0.000129")
    assert rows[2][1:5] == (Decimal("0.00001234"), Decimal("0.000013"), Decimal("0.000012"), Decimal("0.0000125"))

    changed = candles_frame(
        [
            (T0 + H, 0.00012345, 0.00013, 0.00012, 0.00012999, 7.25),  # close and volume revised
            (T0 + 3 * H, 0.0000125, 0.0000126, 0.0000124, 0.0000125, 1.0),  # new
        ]
    )
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=changed) == 2

    rows = stored(instrument)
    assert len(rows) == 4
    assert rows[0][4] == Decimal("0.00012345")  # untouched
    assert rows[1][4:] == (Decimal("0.00012999"), Decimal("7.25"))
    assert rows[3][0] == utc(T0 + 3 * H)


def test_upsert_keeps_timeframes_and_instruments_apart():
    btc, eth = InstrumentFactory(symbol="BTCUSDT", base="BTC"), InstrumentFactory(symbol="ETHUSDT", base="ETH")
    bars = candles_frame(file_rows(3))

    candles_upsert(instrument=btc, timeframe="1h", candles=bars)
    candles_upsert(instrument=btc, timeframe="4h", candles=bars.iloc[:1])
    candles_upsert(instrument=eth, timeframe="1h", candles=bars.iloc[:2])

    assert (len(stored(btc)), len(stored(btc, "4h")), len(stored(eth))) == (3, 1, 2)


def test_upsert_refuses_unvalidated_or_unknown_input():
    instrument = InstrumentFactory()
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame([])) == 0
    with pytest.raises(ValueError, match="must be validated first"):
        candles_upsert(
            instrument=instrument, timeframe="1h", candles=candles_frame([(T0, 1.0, 2.0, 0.5, math.nan, 1.0)])
        )
    with pytest.raises(ValueError, match="unknown timeframe"):
        candles_upsert(instrument=instrument, timeframe="7h", candles=candles_frame(file_rows(1)))
    assert Candle.objects.count() == 0


def test_upsert_of_new_unchanged_and_changed_bars_stores_exactly_the_latest_values(batch_rows):
    instrument = InstrumentFactory()
    before = file_rows(10, start=T0 + 5 * H)  # 05:00 .. 14:00
    del before[4]  # a gap at 09:00
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(before))
    ids = dict(Candle.objects.filter(instrument=instrument).values_list("open_time", "id"))

    batch = file_rows(20, start=T0)  # 00:00 .. 19:00: new before, in the gap and after the stored range
    by_time = {row[0]: row for row in before}
    batch = [by_time.get(row[0], row) for row in batch]  # the stored bars, unchanged ...
    batch[6] = (T0 + 6 * H, 200.0, 205.0, 195.0, 201.0, 33.0)  # ... but for every value of 06:00
    batch[8] = (*batch[8][:4], batch[8][4] + 0.000000000001, batch[8][5])  # the close of 08:00 in its 12th decimal
    batch[14] = (*batch[14][:5], 0.0)  # and the volume of 14:00
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(batch)) == 20

    assert stored(instrument) == as_stored(batch)
    assert stored(instrument)[8][4] == Decimal("103.500000000001")
    after = dict(Candle.objects.filter(instrument=instrument).values_list("open_time", "id"))
    assert all(after[t] == i for t, i in ids.items())  # stored bars are updated in place

    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(batch)) == 20  # idempotent
    assert stored(instrument) == as_stored(batch)
    assert dict(Candle.objects.filter(instrument=instrument).values_list("open_time", "id")) == after


def test_a_sparse_re_upsert_changes_only_the_bars_it_gives(batch_rows):
    instrument = InstrumentFactory()
    before = file_rows(30)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(before))
    batch = [
        (T0, 1.0, 2.0, 0.5, 1.5, 3.0),  # the first stored bar
        (T0 + 29 * H, 4.0, 5.0, 3.5, 4.5, 6.0),  # the last one
        (T0 + 40 * H, 7.0, 8.0, 6.5, 7.5, 9.0),  # a new one
    ]

    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(batch)) == 3

    assert stored(instrument) == as_stored([batch[0], *before[1:29], *batch[1:]])


def test_upsert_takes_the_last_of_duplicate_open_times_in_any_order():
    instrument = InstrumentFactory()
    rows = file_rows(3)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows[:2]))
    revised = (T0 + H, 9.0, 9.5, 8.5, 9.25, 2.0)
    batch = [rows[2], (T0 + H, 7.0, 8.0, 6.0, 7.5, 1.0), rows[0], revised]

    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(batch)) == 4

    assert stored(instrument) == as_stored([rows[0], revised, rows[2]])


def test_re_upserting_values_beyond_twelve_decimals_is_idempotent():
    instrument = InstrumentFactory()
    rows = [(T0, 1.2345678901234567e-05, 1.3e-05, 1.1e-05, 1.2000000000004e-05, 0.1234567890123456)]

    for _ in range(2):
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows))

    assert stored(instrument) == [
        (utc(T0), Decimal("0.000012345679"), Decimal("0.000013"), Decimal("0.000011"), Decimal("0.000012"),
         Decimal("0.123456789012"))
    ]  # fmt: skip


def test_a_bad_row_in_a_re_upsert_leaves_every_stored_bar_as_it_was(batch_rows):
    instrument = InstrumentFactory()
    before = file_rows(8)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(before))
    batch = [(t, o + 1, h + 1, lo + 1, c + 1, v + 1) for t, o, h, lo, c, v in before]
    batch += file_rows(3, start=T0 + 8 * H)  # new bars too
    batch[6] = (T0 + 6 * H, 5.0, 4.0, 6.0, 5.0, 1.0)  # high below low: the check constraint refuses it

    with pytest.raises(IntegrityError):
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(batch))

    assert stored(instrument) == as_stored(before)
    # The connection is still fit for the next batch (on MySQL: a staging table left behind is replaced).
    del batch[6]
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(batch))
    assert stored(instrument) == as_stored([*batch[:6], before[6], *batch[6:]])


@pytest.mark.skipif(connection.vendor != "mysql", reason="the MySQL statements")
def test_mysql_re_upsert_updates_stored_bars_through_the_staging_table():
    instrument = InstrumentFactory()
    rows = file_rows(5)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows))

    with CaptureQueriesContext(connection) as queries:
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows))

    statements = [q["sql"].split(" ", 3)[:3] for q in queries]
    assert ["UPDATE", "`pairs_candle`", "c"] in statements
    assert not any(s[:3] == ["INSERT", "INTO", "`pairs_candle`"] for s in statements)  # every bar was found


# ---------------------------------------------------------------------------------------------------- no overwrite


def test_an_identical_re_upsert_is_a_no_op_and_new_bars_are_added(batch_rows):
    instrument = InstrumentFactory()
    rows = file_rows(10)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows[:7]), overwrite=False)
    before = stored(instrument)

    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows), overwrite=False) == 10

    assert stored(instrument)[:7] == before
    assert len(stored(instrument)) == 10


def test_a_changed_bar_is_refused_with_times_old_and_new_values_and_nothing_is_written(batch_rows):
    instrument = InstrumentFactory(symbol="ETHUSDT")
    rows = file_rows(8)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows))
    before = stored(instrument)
    changed = [*rows, *file_rows(2, start=T0 + 8 * H)]  # two new bars after the stored ones ...
    changed[2] = (T0 + 2 * H, 102.0, 103.0, 101.0, 102.25, 12.0)  # ... the close of 02:00 revised ...
    changed[6] = (T0 + 6 * H, 106.0, 110.0, 105.0, 109.0, 0.0)  # ... and the high, close and volume of 06:00

    with pytest.raises(StoredCandlesDifferError) as info:
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(changed), overwrite=False)

    error = info.value
    assert error.differences.count == 2
    assert error.differences.examples == [
        "2021-01-01T02:00:00Z: close 102.5 -> 102.25",
        "2021-01-01T06:00:00Z: high 107 -> 110, close 106.5 -> 109, volume 16 -> 0",
    ]
    assert str(error) == (
        "ETHUSDT: 2 stored 1h bar(s) of ETHUSDT would change (stored -> new):\n"
        "  2021-01-01T02:00:00Z: close 102.5 -> 102.25\n"
        "  2021-01-01T06:00:00Z: high 107 -> 110, close 106.5 -> 109, volume 16 -> 0"
    )
    assert stored(instrument) == before  # neither the changes nor the new bars

    # With overwrite (the default, as an exchange fetch writes), the new values win.
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(changed)) == 10
    assert stored(instrument)[6][1:] == (Decimal("106"), Decimal("110"), Decimal("105"), Decimal("109"), Decimal("0"))
    assert len(stored(instrument)) == 10


def test_the_count_is_complete_and_the_examples_are_the_first_ten(batch_rows):
    instrument = InstrumentFactory(symbol="BTCUSDT")
    rows = file_rows(20)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows))
    changed = [(t, o, h, lo, c, v + 1) for t, o, h, lo, c, v in rows]  # every volume, in every chunk

    with pytest.raises(StoredCandlesDifferError) as info:
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(changed), overwrite=False)

    differences = info.value.differences
    assert differences.count == 20
    assert differences.examples == [
        f"2021-01-01T{i:02d}:00:00Z: volume {10 + i} -> {11 + i}" for i in range(10)
    ]
    assert str(info.value).endswith("\n  2021-01-01T09:00:00Z: volume 19 -> 20\n  ... and 10 more")
    assert [r[5] for r in stored(instrument)] == [Decimal(str(10.0 + i)) for i in range(20)]


def test_values_stored_alike_are_no_change():
    """1.50 and 1.5 are one value; digits beyond the 12th decimal are stored as the stored bar holds them."""
    instrument = InstrumentFactory()
    rows = [(T0, 1.2345678901234567e-05, 1.3e-05, 1.1e-05, 1.2000000000004e-05, 0.1234567890123456)]
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows), overwrite=False)

    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows), overwrite=False) == 1
    whole = [(T0 + H, 2.0, 3.0, 1.0, 2.0, 5.0)]
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(whole), overwrite=False)
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(whole), overwrite=False) == 1
    assert len(stored(instrument)) == 2


def test_other_series_are_not_compared():
    btc, eth = InstrumentFactory(symbol="BTCUSDT", base="BTC"), InstrumentFactory(symbol="ETHUSDT", base="ETH")
    candles_upsert(instrument=btc, timeframe="1h", candles=candles_frame(file_rows(3)))
    candles_upsert(instrument=btc, timeframe="4h", candles=candles_frame(file_rows(1, base=5.0)))

    other = candles_frame(file_rows(3, base=7.0))
    assert candles_upsert(instrument=eth, timeframe="1h", candles=other, overwrite=False) == 3
    assert candles_upsert(instrument=btc, timeframe="1h", candles=candles_frame(file_rows(3)), overwrite=False) == 3


def test_one_comparing_query_per_chunk_with_stored_bars_and_none_without(monkeypatch):
    monkeypatch.setattr(candles, "UPSERT_BATCH_ROWS", 4)
    instrument = InstrumentFactory()
    rows = file_rows(12)
    with CaptureQueriesContext(connection) as first_import:
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows[:6]), overwrite=False)
    assert comparisons(first_import) == []  # nothing stored in any chunk's range: the probes say so

    with CaptureQueriesContext(connection) as re_import:
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows), overwrite=False)
    assert len(comparisons(re_import)) == 2  # chunks 00-03 and 04-07 hold stored bars, 08-11 none

    with CaptureQueriesContext(connection) as overwrite:
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows), overwrite=True)
    assert comparisons(overwrite) == []  # the overwrite path is the plain bulk upsert


def test_the_connection_is_fit_for_the_next_batch_after_a_refusal():
    instrument = InstrumentFactory()
    rows = file_rows(4)
    candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(rows))
    changed = [*rows[:3], (T0 + 3 * H, 1.0, 2.0, 0.5, 1.5, 1.0)]
    with pytest.raises(StoredCandlesDifferError):
        candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(changed), overwrite=False)

    # A staging table left behind by the refused call is replaced, on MySQL and SQLite alike.
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(changed), overwrite=True) == 4
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candles_frame(changed), overwrite=False) == 4
    assert stored(instrument)[3][0] == datetime(2021, 1, 1, 3, tzinfo=UTC)
