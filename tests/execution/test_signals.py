"""Live signals follow the backtest's rule bar by bar, once per bar, and catch up after an outage."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from django.db import transaction

from execution.models import Signal, SignalState
from execution.services.signals import signal_pairs, signals_update
from pairs.models import Pair, StrategyConfig
from pairs.quant.spread_rule import ACTION_LABELS, RuleState, max_holding_bars, rolling_zscore, run_rule
from pairs.services.evidence import rule_params
from pairs.services.market_data import candles_upsert
from tests.factories import InstrumentFactory, LevelFactory

pytestmark = pytest.mark.django_db

H = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z
BARS = 400
WINDOW = 100


def bar_time(index: int) -> datetime:
    return datetime.fromtimestamp((T0 + index * H) / 1000, tz=UTC)


@pytest.fixture
def market():
    rng = np.random.default_rng(11)
    log_x = np.cumsum(rng.normal(0, 0.01, BARS)) + np.log(50)
    noise = np.zeros(BARS)
    for t in range(1, BARS):
        noise[t] = 0.8 * noise[t - 1] + rng.normal(0, 0.012)
    log_y = 0.2 + 1.1 * log_x + noise
    legs = {}
    for symbol, series in (("SYUSDT", np.exp(log_y)), ("SXUSDT", np.exp(log_x))):
        instrument = InstrumentFactory(symbol=symbol)
        frame = pd.DataFrame({"timestamp": T0 + np.arange(BARS) * H, "open": series, "high": series * 1.001,
                              "low": series * 0.999, "close": series, "volume": 1.0})
        candles_upsert(instrument=instrument, timeframe="1h", candles=frame)
        legs[symbol] = instrument
    config = StrategyConfig.current()
    config.zscore_window_bars = WINDOW
    config.entry_z, config.cooldown_bars = 1.5, 5
    config.save()
    pair = Pair.objects.create(y_instrument=legs["SYUSDT"], x_instrument=legs["SXUSDT"], hedge_ratio=1.1,
                               intercept=0.2, half_life_bars=4.0, level=LevelFactory(number=1),
                               status=Pair.Status.ACTIVE)
    return config, pair, np.exp(log_y), np.exp(log_x)


def expected_actions(config, closes_y, closes_x, first: int, last: int) -> list[str]:
    """The backtest's rule over bars first..last, starting flat at ``first`` (as a new pair's live state does)."""
    z = rolling_zscore(np.log(closes_y), np.log(closes_x), config.zscore_window_bars).zscore
    params = rule_params(config)
    actions, _ = run_rule(z[first : last + 1, None], params, max_holding_bars=max_holding_bars(4.0, params),
                          state=RuleState.flat(1), entries_on_last_bar=True)
    return [ACTION_LABELS[int(a)] for a in actions[:, 0]]


def signalled(pair) -> list[str]:
    return list(Signal.objects.filter(pair=pair).order_by("bar_time").values_list("action", flat=True))


def test_bar_by_bar_signals_equal_the_backtest_rule(market):
    config, pair, closes_y, closes_x = market
    first = WINDOW + 10
    for t in range(first, BARS):
        signals_update(config=config, end=bar_time(t))

    actions = signalled(pair)
    assert len(actions) == BARS - first
    assert actions == expected_actions(config, closes_y, closes_x, first, BARS - 1)
    assert {"enter_long", "enter_short"} & set(actions), "the data should make the rule trade"
    rolling = rolling_zscore(np.log(closes_y), np.log(closes_x), WINDOW)
    stored = Signal.objects.get(pair=pair, bar_time=bar_time(BARS - 1))
    assert stored.zscore == pytest.approx(rolling.zscore[BARS - 1], rel=1e-9)


def test_each_signal_records_the_hedge_ratio_of_its_own_spread(market):
    config, pair, closes_y, closes_x = market
    first = BARS - 60
    for t in range(first, BARS):
        signals_update(config=config, end=bar_time(t))
    rolling = rolling_zscore(np.log(closes_y), np.log(closes_x), WINDOW)
    log_y, log_x = np.log(closes_y), np.log(closes_x)
    signals = list(Signal.objects.filter(pair=pair).order_by("bar_time"))
    assert len(signals) == BARS - first
    for t, signal in zip(range(first, BARS), signals, strict=True):
        assert signal.hedge_ratio == pytest.approx(rolling.hedge_ratio[t], rel=1e-12)
        # the recorded hedge ratio is the one of the stored spread (and so of the z-score)
        spread = log_y[t] - rolling.intercept[t] - signal.hedge_ratio * log_x[t]
        assert signal.spread == pytest.approx(spread, rel=1e-9, abs=1e-12)
    # the rolling fit moves from bar to bar: not the pair's (screening window's) hedge ratio
    assert len({round(s.hedge_ratio, 9) for s in signals}) > 1
    assert all(s.hedge_ratio != pair.hedge_ratio for s in signals)


def test_a_run_after_an_outage_catches_up_in_order_and_equals_bar_by_bar(market):
    config, pair, closes_y, closes_x = market
    first = BARS - 120
    signals_update(config=config, end=bar_time(first))
    run = signals_update(config=config, end=bar_time(BARS - 1))  # the 119 bars since, in one run

    assert run.bars == BARS - 1 - first
    assert signalled(pair) == expected_actions(config, closes_y, closes_x, first, BARS - 1)
    assert SignalState.objects.get(pair=pair).last_bar_time == bar_time(BARS - 1)


def test_running_again_on_the_same_bar_changes_nothing(market):
    config, pair, *_ = market
    signals_update(config=config, end=bar_time(BARS - 2))
    signals_update(config=config, end=bar_time(BARS - 1))
    state = SignalState.objects.values().get(pair=pair)
    count = Signal.objects.count()

    again = signals_update(config=config, end=bar_time(BARS - 1))

    assert again.signals == 0
    assert Signal.objects.count() == count
    assert SignalState.objects.values().get(pair=pair) == state


def test_a_pair_whose_leg_lacks_the_newest_bar_waits(market):
    config, pair, *_ = market
    other = InstrumentFactory(symbol="LATEUSDT")
    frame = pd.DataFrame({"timestamp": T0 + np.arange(BARS + 1) * H, "open": 1.0, "high": 1.0, "low": 1.0,
                          "close": 1.0, "volume": 1.0})
    candles_upsert(instrument=other, timeframe="1h", candles=frame)  # one bar newer than the pair's legs
    Pair.objects.create(y_instrument=other, x_instrument=pair.x_instrument, hedge_ratio=1.0, intercept=0.0,
                        status=Pair.Status.ACTIVE)

    run = signals_update(config=config)

    # The newest bar is LATEUSDT's; SYUSDT and SXUSDT stop one bar earlier, so both pairs have a stale leg.
    assert run.skipped_pairs == 2
    assert not Signal.objects.exists()

    # Once the legs have that bar, the pair is signalled on it.
    for instrument in (pair.y_instrument, pair.x_instrument):
        candles_upsert(instrument=instrument, timeframe="1h", candles=pd.DataFrame(
            {"timestamp": [T0 + BARS * H], "open": 60.0, "high": 60.0, "low": 60.0, "close": 60.0, "volume": 1.0}))
    run = signals_update(config=config)
    # LATEUSDT never moves: the window leaves it out (a frozen market), so its pair is skipped, with no signal; the
    # other pair is signalled on the new bar.
    assert (run.pairs, run.skipped_pairs) == (1, 1)
    assert run.signals == 1
    assert Signal.objects.get(pair=pair).bar_time == bar_time(BARS)


def test_states_kept_between_runs_are_stored_as_they_stand_in_memory(market):
    """A replay passes the same pairs bar after bar: each bar writes only what changed in the states it wrote
    before, and the database must hold exactly what the objects hold."""
    config, pair, *_ = market
    Pair.objects.create(y_instrument=pair.x_instrument, x_instrument=pair.y_instrument, hedge_ratio=0.9,
                        intercept=-0.2, half_life_bars=4.0, level=pair.level, status=Pair.Status.ACTIVE)
    kept = signal_pairs(config)
    fields = ("last_bar_time", "bar_index", "position", "entry_bar", "bars_held", "cooldown")
    seen_positions = set()
    for t in range(WINDOW + 10, BARS):
        signals_update(config=config, end=bar_time(t), pairs=kept)
        if any(getattr(p, "signal_state", None) is not None and p.signal_state.pk is None for p in kept):
            kept = signal_pairs(config)  # created this bar: reloaded with their keys, as the replay does
        stored = {row["pair_id"]: tuple(row[f] for f in fields)
                  for row in SignalState.objects.values("pair_id", *fields)}
        in_memory = {p.pk: tuple(getattr(p.signal_state, f) for f in fields) for p in kept
                     if getattr(p, "signal_state", None) is not None}
        assert stored == in_memory, f"bar {t}"
        seen_positions.add(tuple(sorted(s[2] for s in stored.values())))
    assert len(seen_positions) > 2, "the pairs should hold different positions at times (the CASE path)"


def test_a_store_that_rolls_back_makes_the_next_one_write_every_field(market, monkeypatch):
    config, *_ = market
    kept = signal_pairs(config)
    signals_update(config=config, end=bar_time(BARS - 3), pairs=kept)
    kept = signal_pairs(config)  # the state created above, with its key
    signals_update(config=config, end=bar_time(BARS - 2), pairs=kept)

    def boom(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(SignalState.objects, "bulk_create", boom)
    with pytest.raises(RuntimeError), transaction.atomic():
        signals_update(config=config, end=bar_time(BARS - 1), pairs=kept)
    state = kept[0].signal_state
    assert not hasattr(state, "_written"), "the write was rolled back: nothing is known to be stored"
    stored = SignalState.objects.values_list("last_bar_time", flat=True).get(pk=state.pk)
    assert stored == bar_time(BARS - 2) != state.last_bar_time

    monkeypatch.undo()
    signals_update(config=config, end=bar_time(BARS - 1), pairs=kept)
    fields = ("last_bar_time", "bar_index", "position", "entry_bar", "bars_held", "cooldown")
    assert SignalState.objects.values_list(*fields).get(pk=state.pk) == tuple(getattr(state, f) for f in fields)


def test_a_state_further_behind_than_the_catch_up_restarts_flat_from_the_window(market):
    """Behind by more than MAX_CATCH_UP_BARS (a long outage, a pair active again after weeks), the bars before the
    window are not stepped through: the rule restarts flat on the window's bars, as documented, instead of going on
    with a position, holding time and cooldown that missed those bars."""
    config, pair, closes_y, closes_x = market
    signals_update(config=config, end=bar_time(WINDOW + 10))
    SignalState.objects.filter(pair=pair).update(position=1, entry_bar=5, bars_held=2, cooldown=0)
    Signal.objects.all().delete()

    run = signals_update(config=config, end=bar_time(BARS - 1), max_catch_up_bars=168)

    first = BARS - 1 - 168  # the first bar the window's rolling fit covers
    assert run.bars == 169
    assert signalled(pair) == expected_actions(config, closes_y, closes_x, first, BARS - 1)
