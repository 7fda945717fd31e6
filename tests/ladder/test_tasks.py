"""ladder.tasks.update_pair_statistics: the checks and the grading at the engine's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.market_clock import stored_clock_start
from ladder.tasks import update_pair_statistics
from pairs.models import PairStatistics
from tests.ladder.test_services import LAST_BAR, make_market

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


def test_on_the_stored_clock_the_grading_reads_no_bar_after_it(settings):
    """The demo's stored-data clock stands 24 bars before the newest stored bar: the validation backtest ends at
    the bar that closed at the clock, and the checks see that bar as the newest (not the clock's future)."""
    settings.STATARB_MARKET_CLOCK = "stored"
    pair = make_market().pair("Y2USDT", "XUSDT", level=0)
    clock_bar = LAST_BAR - 24 * HOUR
    stored_clock_start(start=clock_bar + HOUR, end=LAST_BAR + HOUR, bar=HOUR, wall_seconds=1)

    result = update_pair_statistics.apply().get()

    assert result["n_pairs"] == 1
    assert result["maintenance"]["newest_bar"] == clock_bar.isoformat()
    assert result["maintenance"]["feed_stale"] is False
    validation = PairStatistics.objects.get(pair=pair, window=PairStatistics.Window.VALIDATION)
    assert validation.window_end == clock_bar


def test_on_the_wall_clock_the_grading_reads_the_newest_stored_bar():
    pair = make_market().pair("Y2USDT", "XUSDT", level=0)
    result = update_pair_statistics.apply().get()
    assert result["maintenance"]["newest_bar"] == LAST_BAR.isoformat()
    assert result["maintenance"]["feed_stale"] is True  # 2021 data on today's clock
    assert PairStatistics.objects.get(pair=pair, window=PairStatistics.Window.VALIDATION).window_end == LAST_BAR
