"""The window's closes read into a matrix: streamed in chunks, placed by time, and shared by forked children each on
a connection of its own (outside a transaction), equal to one read in this process."""

from __future__ import annotations

import os
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from django.db import connection

from pairs import window_reads
from pairs.marketdata.grid import BarGrid
from pairs.models import Instrument
from pairs.selectors import price_window
from tests.factories import CandleFactory, InstrumentFactory

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z


def utc_hour(hour: int) -> pd.Timestamp:
    return pd.Timestamp(T0 + hour * H, unit="ms", tz="UTC")


@pytest.mark.django_db
def test_window_streams_in_chunks_places_bars_by_time_and_skips_bars_off_the_grid(monkeypatch):
    """The window is read in chunks of WINDOW_FETCH_ROWS rows; each close lands on its bar and instrument, a bar
    stored off the grid is not placed, and the result equals the same read through candle_closes_frame."""
    rng = np.random.default_rng(3)
    instruments = [InstrumentFactory(symbol=f"S{k}USDT", base=f"S{k}", exchange="bybit") for k in range(4)]
    expected = np.full((30, 4), np.nan)
    for column, instrument in enumerate(instruments):
        for hour in range(30):
            if (hour + column) % 7 == 3:
                continue  # a missing bar: NaN on the grid, forward-filled by the window's rules
            close = Decimal(str(round(float(rng.uniform(1, 100)), 6)))
            CandleFactory(instrument=instrument, open_time=utc_hour(hour).to_pydatetime(), close=close)
            expected[hour, column] = float(close)
    CandleFactory(instrument=instruments[1], open_time=(utc_hour(10) + pd.Timedelta(minutes=30)).to_pydatetime(),
                  close=Decimal("999"))
    grid = BarGrid.ending(utc_hour(29).to_pydatetime(), step_s=3600, bars=30)
    assert grid.index().equals(pd.date_range(utc_hour(0), utc_hour(29), freq="h"))
    ordered = sorted(instruments, key=lambda i: i.symbol)
    monkeypatch.setattr(window_reads, "WINDOW_FETCH_ROWS", 7)

    streamed = window_reads.grid_block(ordered, "1h", grid)

    np.testing.assert_array_equal(streamed, expected)
    through_frame = window_reads._grid_block_from_frame(np.full((30, 4), np.nan), ordered, "1h", grid)
    np.testing.assert_array_equal(streamed, through_frame)
    window = price_window(instruments=instruments, timeframe="1h", bars=30)
    assert window.symbols == ["S0USDT", "S1USDT", "S2USDT"]  # S3 misses the first bar
    assert window.excluded["S3USDT"].startswith("short history") and window.filled_bars
    assert not np.isnan(window.closes).any() and 999.0 not in window.closes


def _store_five_instruments() -> list[Instrument]:
    instruments = [InstrumentFactory(symbol=f"P{k}USDT") for k in range(5)]
    for column, instrument in enumerate(instruments):
        for hour in range(40):
            if (hour, column) != (17, 3):  # one forward-filled bar
                CandleFactory(instrument=instrument, open_time=utc_hour(hour).to_pydatetime(),
                              close=Decimal(100 + column) + Decimal(hour) / 7)
    return instruments


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_window_read_shared_by_forked_children_equals_one_read(monkeypatch):
    """price_window(processes=2) outside a transaction: forked children read the columns on connections of their
    own (on SQLite's in-memory test database, which a child can't see, it reads here). The same window either way,
    and this process's connection is the same one afterwards and still works (a child never closes it)."""
    monkeypatch.setattr(window_reads, "SHARED_READ_MIN_INSTRUMENTS", 2)
    forks = []
    real_fork = os.fork

    def counted_fork():
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counted_fork)
    instruments = _store_five_instruments()
    alone = price_window(instruments=instruments, timeframe="1h", bars=30)
    connection.ensure_connection()
    raw_before = connection.connection

    shared = price_window(instruments=instruments, timeframe="1h", bars=30, processes=2)

    np.testing.assert_array_equal(shared.closes, alone.closes)
    assert (shared.symbols, shared.filled_bars, shared.excluded) == (alone.symbols, alone.filled_bars, alone.excluded)
    assert shared.bar_time(-1) == utc_hour(39).to_pydatetime() and shared.times.equals(alone.times)
    in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()
    assert len(forks) == (0 if in_memory else 2)
    assert connection.connection is raw_before
    assert Instrument.objects.count() == 5


@pytest.mark.django_db
def test_inside_a_transaction_the_window_is_read_here(monkeypatch):
    """A child's connection could not see this transaction's rows: inside one, no child is forked."""
    monkeypatch.setattr(window_reads, "SHARED_READ_MIN_INSTRUMENTS", 2)
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked inside a transaction"))
    instruments = _store_five_instruments()

    window = price_window(instruments=instruments, timeframe="1h", bars=30, processes=2)

    assert window.symbols == [f"P{k}USDT" for k in range(5)] and not np.isnan(window.closes).any()
