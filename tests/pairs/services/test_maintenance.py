"""Every rule of pairs.services.maintenance's table, against the database.

The data's clock is the newest stored bar, ``NEWEST`` below; the wall clock (``now``) is passed in explicitly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from pairs.models import Candle, Instrument, Level, LevelChange, Pair, StrategyConfig
from pairs.services import maintenance
from pairs.services.maintenance import selection_maintenance
from pairs.services.market_data import candles_upsert
from tests.factories import ExchangeAccountFactory, InstrumentFactory, OrderFactory, PairFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)
NEWEST = datetime(2021, 6, 30, 12, tzinfo=UTC)
FRESH_NOW = NEWEST + 2 * HOUR  # the bar opened at NEWEST closed an hour ago: the feed is live


@pytest.fixture
def config() -> StrategyConfig:
    config = StrategyConfig.current()
    config.exchange, config.timeframe = "bybit", "1h"
    config.stale_after_bars = 6
    config.candle_retention_days = 10
    config.retire_after_stale_bars = 20
    config.save()
    return config


@pytest.fixture
def levels() -> dict[int, Level]:
    return {level.number: level for level in Level.objects.all()}


def instrument(symbol: str, *, exchange: str = "bybit", **kwargs) -> Instrument:
    return InstrumentFactory(exchange=exchange, symbol=symbol, base=symbol.removesuffix("USDT"), **kwargs)


def bars(instrument: Instrument, *, first: datetime, last: datetime) -> int:
    times = pd.date_range(first, last, freq="h")
    frame = pd.DataFrame({"timestamp": times.as_unit("ms").asi8, "open": 10.0, "high": 10.5, "low": 9.5,
                          "close": 10.0, "volume": 1.0})
    return candles_upsert(instrument=instrument, timeframe="1h", candles=frame)


def pair(y: Instrument, x: Instrument, **kwargs) -> Pair:
    return PairFactory(y_instrument=y, x_instrument=x, **kwargs)


def status(p: Pair) -> str:
    p.refresh_from_db()
    return p.status


# --- candle retention ---------------------------------------------------------------------------------------------


def test_candles_older_than_the_retention_before_the_newest_bar_are_deleted(config, monkeypatch):
    monkeypatch.setattr(maintenance, "DELETE_CHUNK_ROWS", 7)  # several chunks
    a, b = instrument("AUSDT"), instrument("BUSDT")
    other_exchange = instrument("AUSDT", exchange="binance")
    cutoff = NEWEST - timedelta(days=10)
    bars(a, first=cutoff - 30 * HOUR, last=NEWEST)
    bars(b, first=cutoff - 5 * HOUR, last=NEWEST - 100 * HOUR)
    bars(other_exchange, first=cutoff - 30 * HOUR, last=NEWEST)

    summary = selection_maintenance(config=config, now=FRESH_NOW)

    assert summary.newest_bar == NEWEST
    assert summary.candles_deleted == 30 + 5
    assert not Candle.objects.filter(instrument__in=[a, b], open_time__lt=cutoff).exists()
    # The bar exactly at the cut-off stays, as does everything after it.
    assert Candle.objects.filter(instrument=a).order_by("open_time").first().open_time == cutoff
    assert Candle.objects.filter(instrument=a).count() == 10 * 24 + 1
    assert Candle.objects.filter(instrument=b).count() == 10 * 24 + 1 - 100
    # Another exchange's candles are not this configuration's to clean.
    assert Candle.objects.filter(instrument=other_exchange).count() == 10 * 24 + 31
    # Nothing left to delete the second time.
    assert selection_maintenance(config=config, now=FRESH_NOW).candles_deleted == 0


def test_retention_follows_the_data_clock_not_the_wall_clock(config):
    a = instrument("AUSDT")
    bars(a, first=NEWEST - timedelta(days=5), last=NEWEST)
    summary = selection_maintenance(config=config, now=NEWEST + timedelta(days=365))
    assert summary.feed_stale is True
    assert summary.candles_deleted == 0
    assert Candle.objects.filter(instrument=a).count() == 5 * 24 + 1


# --- stale symbols, suspension and resumption ---------------------------------------------------------------------


def test_a_symbol_lagging_more_than_stale_after_bars_suspends_its_active_pairs_and_resumes_them(config, levels):
    a, b, c, d = (instrument(s) for s in ("AUSDT", "BUSDT", "CUSDT", "DUSDT"))
    start = NEWEST - 50 * HOUR
    bars(a, first=start, last=NEWEST)
    bars(b, first=start, last=NEWEST - 7 * HOUR)  # 7 bars behind: stale
    bars(c, first=start, last=NEWEST - 6 * HOUR)  # 6 bars behind: still fresh
    bars(d, first=start, last=NEWEST)
    stale_ab = pair(a, b, level=levels[1])
    stale_bc = pair(b, c, level=levels[2])
    fresh_ac = pair(a, c, level=levels[1])
    fresh_cd = pair(c, d, level=levels[0])
    candidate_ba = pair(b, a, status=Pair.Status.CANDIDATE, level=levels[0])
    retired_db = pair(d, b, status=Pair.Status.RETIRED, level=None)

    summary = selection_maintenance(config=config, now=FRESH_NOW)

    assert summary.feed_stale is False
    assert summary.stale_symbols == ["BUSDT"]
    assert summary.pairs_suspended == 2 and summary.pairs_resumed == 0
    assert status(stale_ab) == status(stale_bc) == Pair.Status.SUSPENDED
    assert status(fresh_ac) == status(fresh_cd) == Pair.Status.ACTIVE
    assert status(candidate_ba) == Pair.Status.CANDIDATE
    assert status(retired_db) == Pair.Status.RETIRED
    # Suspension is not a level change.
    stale_ab.refresh_from_db()
    assert stale_ab.level == levels[1]
    assert not LevelChange.objects.exists()

    # Still stale: nothing more happens.
    again = selection_maintenance(config=config, now=FRESH_NOW)
    assert (again.pairs_suspended, again.pairs_resumed) == (0, 0)

    # B catches up: its pairs return to active; the others are untouched.
    bars(b, first=NEWEST - 6 * HOUR, last=NEWEST)
    summary = selection_maintenance(config=config, now=FRESH_NOW)
    assert summary.stale_symbols == []
    assert summary.pairs_suspended == 0 and summary.pairs_resumed == 2
    assert status(stale_ab) == status(stale_bc) == Pair.Status.ACTIVE
    assert status(candidate_ba) == Pair.Status.CANDIDATE
    assert status(retired_db) == Pair.Status.RETIRED


def test_a_leg_stale_for_longer_than_retire_after_stale_bars_retires_the_pair(config, levels):
    a, b, c, d = (instrument(s) for s in ("AUSDT", "BUSDT", "CUSDT", "DUSDT"))
    start = NEWEST - 100 * HOUR
    bars(a, first=start, last=NEWEST)
    bars(b, first=start, last=NEWEST - 21 * HOUR)  # more than 20 bars behind: retired
    bars(c, first=start, last=NEWEST - 20 * HOUR)  # exactly 20 behind: only suspended
    long_stale = pair(a, b, level=levels[2], level_locked=True)
    short_stale = pair(a, c, level=levels[1])
    fresh = pair(a, d, level=levels[1])
    bars(d, first=start, last=NEWEST)

    summary = selection_maintenance(config=config, now=FRESH_NOW)

    assert summary.stale_symbols == ["BUSDT", "CUSDT"]
    assert summary.pairs_retired_stale == 1
    long_stale.refresh_from_db()
    assert long_stale.status == Pair.Status.RETIRED and long_stale.level is None
    change = LevelChange.objects.get(pair=long_stale)
    assert change.from_level == levels[2] and change.to_level is None and change.changed_by is None
    assert change.reason.startswith("retired: a leg has had no data for more than 20 bars")
    assert status(short_stale) == Pair.Status.SUSPENDED
    short_stale.refresh_from_db()
    assert short_stale.level == levels[1]
    assert status(fresh) == Pair.Status.ACTIVE
    assert LevelChange.objects.count() == 1
    # Retired stays retired when the data comes back.
    bars(b, first=NEWEST - 21 * HOUR, last=NEWEST)
    bars(c, first=NEWEST - 20 * HOUR, last=NEWEST)
    summary = selection_maintenance(config=config, now=FRESH_NOW)
    assert summary.pairs_resumed == 1 and summary.pairs_retired_stale == 0
    assert status(long_stale) == Pair.Status.RETIRED
    assert status(short_stale) == Pair.Status.ACTIVE


def test_a_trading_instrument_without_any_candle_is_stale(config, levels):
    a, empty = instrument("AUSDT"), instrument("NEWUSDT")
    bars(a, first=NEWEST - 10 * HOUR, last=NEWEST)
    p = pair(a, empty, level=levels[0])
    summary = selection_maintenance(config=config, now=FRESH_NOW)
    assert summary.stale_symbols == ["NEWUSDT"]
    # A leg that never had a bar counts as stale for longer than any limit: the pair is retired.
    assert summary.pairs_retired_stale == 1
    assert status(p) == Pair.Status.RETIRED


# --- stale feed ---------------------------------------------------------------------------------------------------


def test_a_stale_feed_is_reported_and_suspends_nothing(config, levels):
    a, b = instrument("AUSDT"), instrument("BUSDT")
    bars(a, first=NEWEST - 50 * HOUR, last=NEWEST)
    bars(b, first=NEWEST - 50 * HOUR, last=NEWEST - 20 * HOUR)  # would be stale on a live feed
    p = pair(a, b, level=levels[1])

    # The newest bar opened 8 bars ago: more than stale_after_bars + 1 bars of wall-clock time.
    summary = selection_maintenance(config=config, now=NEWEST + 8 * HOUR)
    assert summary.feed_stale is True
    assert summary.stale_symbols == []
    assert summary.pairs_suspended == summary.pairs_resumed == 0
    assert status(p) == Pair.Status.ACTIVE
    assert summary.as_dict()["feed_stale"] is True

    # At exactly stale_after_bars + 1 bars the feed still counts as live, and B's lag counts.
    summary = selection_maintenance(config=config, now=NEWEST + 7 * HOUR)
    assert summary.feed_stale is False
    assert summary.stale_symbols == ["BUSDT"]
    assert status(p) == Pair.Status.SUSPENDED


def test_no_candles_at_all_reports_no_newest_bar(config, levels):
    p = pair(instrument("AUSDT"), instrument("BUSDT"), level=levels[0])
    summary = selection_maintenance(config=config, now=FRESH_NOW)
    assert summary.newest_bar is None and summary.feed_stale is False
    assert summary.as_dict()["newest_bar"] is None
    assert status(p) == Pair.Status.ACTIVE


# --- delisted legs ------------------------------------------------------------------------------------------------


def test_a_delisted_leg_retires_the_pair_even_when_its_level_is_locked(config, levels):
    a, b, c = instrument("AUSDT"), instrument("BUSDT"), instrument("CUSDT")
    for leg in (a, b, c):
        bars(leg, first=NEWEST - 10 * HOUR, last=NEWEST)
    locked = pair(a, b, level=levels[2], level_locked=True)
    plain = pair(b, c, level=levels[1], status=Pair.Status.SUSPENDED)
    unaffected = pair(a, c, level=levels[1])
    Instrument.objects.filter(pk=b.pk).update(status=Instrument.Status.DELISTED)

    summary = selection_maintenance(config=config, now=FRESH_NOW)

    assert summary.pairs_retired == 2
    for p, old_level in ((locked, levels[2]), (plain, levels[1])):
        p.refresh_from_db()
        assert p.status == Pair.Status.RETIRED and p.level is None
        change = LevelChange.objects.get(pair=p)
        assert change.from_level == old_level and change.to_level is None
        assert change.automatic is True and change.changed_by is None
        assert change.reason == "retired: a leg was delisted"
    assert status(unaffected) == Pair.Status.ACTIVE
    # A delisted symbol is not "stale": it has its own rule.
    assert "BUSDT" not in summary.stale_symbols

    # Retired pairs are not retired again.
    again = selection_maintenance(config=config, now=FRESH_NOW)
    assert again.pairs_retired == 0
    assert LevelChange.objects.count() == 2


# --- orphans ------------------------------------------------------------------------------------------------------


def test_orphan_delisted_instruments_are_deleted_the_others_kept(config, levels):
    live = instrument("AUSDT")
    bars(live, first=NEWEST - 10 * HOUR, last=NEWEST)
    orphan = instrument("GONEUSDT", status=Instrument.Status.DELISTED)
    with_candles = instrument("OLDUSDT", status=Instrument.Status.DELISTED)
    bars(with_candles, first=NEWEST - 10 * HOUR, last=NEWEST - 5 * HOUR)
    with_pair = instrument("PAIREDUSDT", status=Instrument.Status.DELISTED)
    pair(live, with_pair, status=Pair.Status.RETIRED, level=None)
    with_order = instrument("ORDEREDUSDT", status=Instrument.Status.DELISTED)
    other = instrument("OTHERUSDT")
    trade = PairTradeFactory(account=ExchangeAccountFactory(level=levels[1]), pair=pair(live, other, level=levels[1]))
    OrderFactory(trade=trade, instrument=with_order, qty=Decimal("1"))
    trading_without_data = instrument("IDLEUSDT")

    summary = selection_maintenance(config=config, now=FRESH_NOW)

    assert summary.orphan_instruments_deleted == 1
    assert not Instrument.objects.filter(pk=orphan.pk).exists()
    kept = {with_candles.pk, with_pair.pk, with_order.pk, trading_without_data.pk, live.pk}
    assert kept <= set(Instrument.objects.values_list("pk", flat=True))
    assert selection_maintenance(config=config, now=FRESH_NOW).orphan_instruments_deleted == 0


def test_orphans_are_deleted_even_without_any_candle(config):
    orphan = instrument("GONEUSDT", status=Instrument.Status.DELISTED)
    summary = selection_maintenance(config=config, now=FRESH_NOW)
    assert summary.orphan_instruments_deleted == 1
    assert not Instrument.objects.filter(pk=orphan.pk).exists()


def test_a_pair_of_another_timeframe_is_not_retired_for_the_configured_timeframe_s_stale_bars(config, levels):
    # After a switch of StrategyConfig.timeframe, the pairs of the old one (their legs' bars of the new timeframe not
    # fetched) were retired, locked or not, by bars they never read; the suspension already left them alone.
    a, b = instrument("AUSDT"), instrument("BUSDT")
    bars(a, first=NEWEST - 100 * HOUR, last=NEWEST)
    bars(b, first=NEWEST - 100 * HOUR, last=NEWEST - 21 * HOUR)
    hourly = pair(a, b, level=levels[1])
    four_hourly = pair(a, b, level=levels[2], level_locked=True, timeframe="4h")

    summary = selection_maintenance(config=config, now=FRESH_NOW)

    assert summary.pairs_retired_stale == 1
    assert status(hourly) == Pair.Status.RETIRED
    assert status(four_hourly) == Pair.Status.ACTIVE
    four_hourly.refresh_from_db()
    assert four_hourly.level == levels[2]
    assert not LevelChange.objects.filter(pair=four_hourly).exists()


def test_a_suspension_and_a_resumption_are_in_the_audit_naming_the_pairs(config, levels):
    # The status decides whether a pair trades; it changed with no trace, so nobody could say when or why a pair
    # stopped trading.
    from core.models import AuditEntry

    a, b, c = (instrument(s) for s in ("AUSDT", "BUSDT", "CUSDT"))
    bars(a, first=NEWEST - 50 * HOUR, last=NEWEST)
    bars(b, first=NEWEST - 50 * HOUR, last=NEWEST - 7 * HOUR)
    bars(c, first=NEWEST - 50 * HOUR, last=NEWEST)
    pair(a, b, level=levels[1])
    pair(c, b, level=levels[0])
    pair(a, c, level=levels[1])

    selection_maintenance(config=config, now=FRESH_NOW)
    selection_maintenance(config=config, now=FRESH_NOW)  # nothing changes: nothing recorded

    entry = AuditEntry.objects.get()
    assert (entry.action, entry.channel, entry.actor_label) == ("suspend_pairs", "system", "maintenance")
    assert entry.summary == "2 pair(s) suspended: a leg's data is stale: AUSDT/BUSDT, CUSDT/BUSDT"
    assert entry.details["pairs"] == ["AUSDT/BUSDT", "CUSDT/BUSDT"]

    bars(b, first=NEWEST - 6 * HOUR, last=NEWEST)
    selection_maintenance(config=config, now=FRESH_NOW)
    entry = AuditEntry.objects.get(action="resume_pairs")
    assert entry.summary == "2 pair(s) resumed: its legs' data is fresh again: AUSDT/BUSDT, CUSDT/BUSDT"
