"""The price grid without pandas: BarGrid's times, the numpy forward fill, PriceWindow's lazy DatetimeIndex."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from pairs.marketdata.grid import (
    LEAD_BARS,
    MAX_FORWARD_FILL_BARS,
    BarGrid,
    PriceWindow,
    empty_window,
    forward_fill,
    grid_window,
)


def test_bar_grid_gives_the_index_pandas_built_before():
    end = datetime(2021, 6, 27, 0, tzinfo=UTC)
    grid = BarGrid.ending(end, step_s=3600, bars=2000)

    expected = pd.date_range(end=pd.Timestamp(end), periods=2000, freq=pd.Timedelta(hours=1))
    index = grid.index()
    assert index.equals(expected) and index.dtype == expected.dtype and index.freq == expected.freq
    assert grid.time(0) == expected[0].to_pydatetime() and grid.time(-1) == end
    assert BarGrid.ending(end.replace(tzinfo=None), step_s=3600, bars=3).time(-1) == end  # naive is UTC
    with pytest.raises(IndexError):
        grid.time(2000)
    with pytest.raises(ValueError, match="whole second"):
        BarGrid.ending(datetime(2021, 6, 27, 0, 0, 0, 5, tzinfo=UTC), step_s=3600, bars=3)


def test_forward_fill_equals_pandas_ffill_with_a_limit():
    rng = np.random.default_rng(3)
    block = rng.normal(size=(400, 30))
    block[rng.random(block.shape) < 0.3] = np.nan
    block[:5, 0] = np.nan  # leading gap: nothing to fill from
    block[50:70, 1] = np.nan  # longer than the limit: only its first bars are filled

    expected = pd.DataFrame(block).ffill(limit=MAX_FORWARD_FILL_BARS).to_numpy()
    np.testing.assert_array_equal(forward_fill(block, limit=MAX_FORWARD_FILL_BARS), expected)


def test_price_window_builds_its_datetime_index_only_when_asked():
    grid = BarGrid.ending(datetime(2021, 1, 2, tzinfo=UTC), step_s=3600, bars=4)
    block = np.array([[1.0, 2.0], [np.nan, 2.5], [1.2, 2.6], [1.3, 2.7]])
    window = grid_window(timeframe="1h", times=grid, block=block, symbols=["A", "B"], instrument_ids=[1, 2])

    assert isinstance(window._times, BarGrid) and window.bars == 4
    assert window.bar_time(0) == datetime(2021, 1, 1, 21, tzinfo=UTC)
    assert window.filled_bars == {"A": 1} and window.closes[1, 0] == 1.0
    assert window.times.equals(grid.index()) and isinstance(window._times, pd.DatetimeIndex)
    assert window.bar_time(-1) == datetime(2021, 1, 2, tzinfo=UTC)
    given = PriceWindow(timeframe="1h", times=grid.index(), symbols=[], instrument_ids=[], closes=np.empty((4, 0)))
    assert given.bar_time(1) == datetime(2021, 1, 1, 22, tzinfo=UTC)
    assert len(empty_window("1h").times) == 0 and empty_window("1h").times.tz is not None


def test_a_window_starting_in_a_gap_is_filled_from_the_bars_before_it():
    """Where a window starts must not decide whether a symbol is in it: its first bars, missing in a gap, are filled
    from the lead (the bars before the window) as they are inside a longer window; a symbol listed inside the
    window, with nothing before it, is still left out."""
    closes = np.array([[1.0, 5.0, np.nan], [1.1, np.nan, np.nan], [np.nan, np.nan, np.nan], [np.nan, np.nan, 3.0],
                       [1.4, 5.4, 3.1], [1.5, 5.5, 3.2]])
    grid = BarGrid.ending(datetime(2021, 1, 2, tzinfo=UTC), step_s=3600, bars=4)
    lead = np.full((LEAD_BARS, 3), np.nan)
    lead[-2:] = closes[:2]

    window = grid_window(timeframe="1h", times=grid, block=closes[2:], symbols=["A", "B", "C"],
                         instrument_ids=[1, 2, 3], lead=lead)
    longer = grid_window(timeframe="1h", times=BarGrid.ending(datetime(2021, 1, 2, tzinfo=UTC), step_s=3600, bars=6),
                         block=closes, symbols=["A", "B", "C"], instrument_ids=[1, 2, 3])

    assert window.symbols == ["A", "B"] and window.excluded["C"].startswith("short history")
    np.testing.assert_array_equal(window.closes, longer.closes[2:, :2])
    assert window.filled_bars == {"A": 2, "B": 2}
    alone = grid_window(timeframe="1h", times=grid, block=closes[2:], symbols=["A", "B", "C"], instrument_ids=[1, 2, 3])
    assert alone.symbols == []  # without the lead nothing starts the window (as before)
