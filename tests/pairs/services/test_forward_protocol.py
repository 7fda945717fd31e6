"""The production selection forward in time (issue #17): formation, then validation, then trading.

The synthetic market of the ladder's tests (two legs cointegrated with X, one independent random walk) is screened
by the real ``screening_run`` and graded by the real ``pair_statistics_update``: the formation window must end
``validation_bars`` before the newest bar, nothing of the validation bars may reach the screening, and the grading
must weigh the validation bars traded as the bots trade them. The point-in-time universe of a run on history reads
the candles up to the formation end, never today's ticker or status.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from ladder.services import pair_statistics_update
from pairs.models import Candle, CointegrationRun, Instrument, Level, LevelChange, Pair, PairStatistics, PairTest
from pairs.selectors import universe_instruments
from pairs.services.screening import screening_run
from tests.ladder.test_services import (
    FORMATION_END,
    LAST_BAR,
    LOOKBACK,
    VALIDATION,
    assert_stored_equals,
    formation,
    make_market,
    reference_backtest,
    validation,
)

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


@pytest.fixture
def market():
    market = make_market()
    market.config.min_history_bars = LOOKBACK
    market.config.max_qvalue = 0.5  # four symbols: let the two constructed pairs through Benjamini-Hochberg
    market.config.save()
    # Liquid markets: a run on history reads close x volume where no turnover is stored (40M USDT a bar here).
    Candle.objects.update(volume=Decimal("1000000"))
    return market


def screened_pair(a: str, b: str) -> Pair:
    """The pair the screen wrote for the unordered pair {a, b} (one direction per unordered pair)."""
    pairs = Pair.objects.select_related("y_instrument", "x_instrument", "last_run")
    return (pairs.filter(y_instrument__symbol=a, x_instrument__symbol=b)
            | pairs.filter(y_instrument__symbol=b, x_instrument__symbol=a)).get()


def test_the_formation_window_ends_validation_bars_before_the_newest_bar(market):
    outcome = screening_run(config=market.config)
    run = outcome.run
    assert run.window_end == FORMATION_END == LAST_BAR - VALIDATION * HOUR
    assert run.window_start == FORMATION_END - (LOOKBACK - 1) * HOUR
    assert run.parameters["validation_bars"] == VALIDATION
    assert run.parameters["validation_end"] == LAST_BAR.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The fit stored on the pair is the formation window's own OLS (log y on log x), not one that saw later bars.
    pair = screened_pair("Y2USDT", "XUSDT")
    window = formation(market.closes)
    y, x = (np.log(window[leg.symbol].to_numpy()) for leg in (pair.y_instrument, pair.x_instrument))
    slope, intercept = np.polyfit(x, y, 1)
    assert pair.hedge_ratio == pytest.approx(slope, rel=1e-9)
    assert pair.intercept == pytest.approx(intercept, rel=1e-9, abs=1e-9)
    assert pair.last_run_id == run.pk


def test_the_validation_bars_do_not_reach_the_screening(market):
    screening_run(config=market.config)
    before = {(t.pair.y_instrument.symbol, t.pair.x_instrument.symbol): (t.hedge_ratio, t.pvalue, t.half_life_bars)
              for t in PairTest.objects.select_related("pair__y_instrument", "pair__x_instrument")}
    # Scramble every close after the formation window: a screening at the same newest bar must not change.
    changed = market.closes.copy()
    after_formation = changed.index > FORMATION_END
    rng = np.random.default_rng(11)
    for symbol in changed.columns:
        noise = np.exp(rng.normal(0, 0.05, after_formation.sum()))
        changed.loc[after_formation, symbol] = (changed.loc[after_formation, symbol] * noise).round(6)
    market.write(changed)
    second = screening_run(config=market.config).run
    after = {(t.pair.y_instrument.symbol, t.pair.x_instrument.symbol): (t.hedge_ratio, t.pvalue, t.half_life_bars)
             for t in PairTest.objects.filter(run=second).select_related("pair__y_instrument", "pair__x_instrument")}
    assert after == before


def test_grading_weighs_the_validation_bars_traded_as_the_bots_trade(market):
    screening_run(config=market.config)
    outcome = pair_statistics_update(config=market.config)
    assert outcome.window_end == LAST_BAR
    pair = screened_pair("Y2USDT", "XUSDT")
    validated = PairStatistics.objects.get(pair=pair, window=PairStatistics.Window.VALIDATION)
    in_sample = PairStatistics.objects.get(pair=pair, window=PairStatistics.Window.IN_SAMPLE)
    assert (validated.window_start, validated.window_end) == (FORMATION_END + HOUR, LAST_BAR)
    assert (in_sample.window_start, in_sample.window_end) == (pair.last_run.window_start, FORMATION_END)
    assert_stored_equals(validated, reference_backtest(market, pair, validation))
    assert_stored_equals(in_sample, reference_backtest(market, pair, formation))
    # Level 1 is decided on the validation trades: a bar one trade above them keeps the pair on the watch level,
    # a bar at them promotes it (every other threshold open). The in-sample window made a different count.
    assert in_sample.trades != validated.trades
    Pair.objects.filter(pk=pair.pk).update(level=Level.objects.get(number=0))  # from the watch level again
    Level.objects.filter(number=1).update(min_trades=validated.trades + 1, min_win_rate=0, min_profit_factor=0,
                                          max_drawdown=1, max_qvalue=1, min_half_life_bars=0,
                                          max_half_life_bars=1e9)
    pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 0
    Level.objects.filter(number=1).update(min_trades=validated.trades)
    pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 1
    assert LevelChange.objects.filter(pair=pair).latest("pk").reason.startswith("promoted")


def test_a_later_grading_validates_on_every_bar_since_the_formation(market):
    # Screening on history (the replay's way: end given), grading later: the validation grows with the bars.
    screen_at = LAST_BAR - 40 * HOUR
    run = screening_run(config=market.config, end=screen_at).run
    assert run.window_end == screen_at - VALIDATION * HOUR
    pair_statistics_update(config=market.config)
    candidates = list(Pair.objects.filter(last_run=run))
    assert candidates
    for pair in candidates:
        validated = PairStatistics.objects.get(pair=pair, window=PairStatistics.Window.VALIDATION)
        assert (validated.window_start, validated.window_end) == (run.window_end + HOUR, LAST_BAR)
        assert validated.trades > 0


def test_a_run_on_history_takes_its_universe_from_the_candles_up_to_the_formation_end(market):
    config = market.config
    config.min_turnover_24h = Decimal("1000000")
    config.save()
    x, y1, y2, r = (market.instruments[s] for s in ("XUSDT", "Y1USDT", "Y2USDT", "RUSDT"))
    # Today's ticker says Y2 is liquid; its candles up to the formation end say it was not (500,000 a day).
    Instrument.objects.filter(pk=y2.pk).update(turnover_24h=Decimal("50000000"))
    Candle.objects.filter(instrument=y2).update(turnover=Decimal("20833.333333"))
    # Today's ticker says R is illiquid and it is delisted since; at the time it traded 2.4M a day.
    Instrument.objects.filter(pk=r.pk).update(turnover_24h=Decimal("10"), status=Instrument.Status.DELISTED)
    Candle.objects.filter(instrument=r).update(turnover=Decimal("100000"))
    # X: no ticker and no stored turnover: its candles' close x volume says it was liquid (as the walk-forward
    # reads it); Y1: liquid until the formation end only.
    Candle.objects.filter(instrument=y1, open_time__lte=FORMATION_END).update(turnover=Decimal("100000"))
    Candle.objects.filter(instrument=y1, open_time__gt=FORMATION_END).update(turnover=Decimal("1"))

    at_formation_end = {i.symbol for i in universe_instruments(config=config, at=FORMATION_END)}
    assert at_formation_end == {"XUSDT", "Y1USDT", "RUSDT"}
    live = {i.symbol for i in universe_instruments(config=config)}
    assert live == {"XUSDT", "Y1USDT", "Y2USDT"}  # today's status and ticker

    run = screening_run(config=config, end=LAST_BAR).run
    assert sorted(run.parameters["instrument_ids"]) == sorted([x.pk, y1.pk, r.pk])
    assert CointegrationRun.objects.count() == 1
