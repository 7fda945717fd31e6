"""One execution model: the replay (signals -> bot -> paper exchange) and the vectorised backtest fill the same
trades at the same prices, at the next bar's open and, with one bar of delay, one bar later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core.market_clock import stored_clock_start, stored_clock_step
from execution.models import Signal
from pairs.models import Instrument, Level, Pair
from pairs.quant.spread_rule import ACTION_LABELS
from replay.report import replay_trades
from replay.run import replay_run
from replay.sensitivity import pairs_backtest
from statarb_site.celery import app as celery_app
from statarb_site.pipelines import signals_pipeline
from tests.factories import PairFactory
from tests.replay.replay_world import START, import_market, parsed, wipe_replay

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
END = START + timedelta(days=6, hours=23)
EXIT_REASONS = {"exit": "exit_signal", "stop": "stop", "max_holding": "max_holding"}


def fixed_pair() -> Pair:
    """NEO/OMG on level 1, traded as it is (no selection) from the first replayed bar."""
    return PairFactory(y_instrument=Instrument.objects.get(symbol="NEOUSDT"),
                       x_instrument=Instrument.objects.get(symbol="OMGUSDT"), level=Level.objects.get(number=1),
                       half_life_bars=12.0)


def leg_fills(trade: dict, action: str) -> dict[str, dict]:
    return {leg["symbol"]: leg for leg in trade["legs"] if leg["action"] == action}


def fill_price(price: float, slippage: float, buy: bool) -> Decimal:
    return Decimal(repr(price)) * (1 + Decimal(repr(slippage))) if buy else \
        Decimal(repr(price)) * (1 - Decimal(repr(slippage)))


def assert_legs_filled_like(trade: dict, reference: dict) -> None:
    """Both legs of the replayed ``trade``, opened and closed, filled when and at the price (open +- slippage) of
    the backtest's ``reference`` record, on the right sides."""
    for action, prefix in (("open", "entry"), ("close", "exit")):
        fills = leg_fills(trade, action)
        when = datetime.fromtimestamp(reference[f"{prefix}_fill_ms"] / 1000, tz=UTC)
        assert {leg["filled_at"] for leg in fills.values()} == {when}
        long_y = (reference["side"] == "long") == (action == "open")
        long_x = long_y == (reference["hedge_ratio"] < 0)
        for symbol, leg, is_buy in (("NEOUSDT", "y", long_y), ("OMGUSDT", "x", long_x)):
            expected = fill_price(reference[f"{prefix}_price_{leg}"], reference[f"{prefix}_slippage_{leg}"], is_buy)
            assert fills[symbol]["side"] == ("buy" if is_buy else "sell")
            assert abs(fills[symbol]["price"] - expected) <= Decimal("1e-9") * expected, (trade, symbol)


def assert_same_trades(config, delay: int) -> list[dict]:
    pair = Pair.objects.get()
    replayed = [parsed(t) for t in replay_trades(account=replay_run(
        start=START, end=END, config=config, reselect_every=None, execution_delay_bars=delay).account)]
    closed = [t for t in replayed if t["closed_at"] is not None]
    assert len(closed) >= 3
    _, result, _ = pairs_backtest(config=config, pairs=[pair], start=START, end=END, execution_delay_bars=delay)
    backtested = result.trades.records()
    # The backtest also closes what is still open at the end: the replay's closed trades are its first ones.
    assert len(backtested) >= len(closed)
    for trade, reference in zip(closed, backtested, strict=False):
        assert trade["side"] == f"{reference['side']}_spread"
        assert trade["exit_reason"] == EXIT_REASONS[reference["exit_reason"]]
        assert trade["hedge_ratio"] == pytest.approx(reference["hedge_ratio"], rel=1e-9)
        assert_legs_filled_like(trade, reference)
        # the signal was known at its bar's close, when the bot acted: the fill is at the next open, or delay bars on
        assert trade["opened_at"] == trade["signal_at"]
        assert {leg["filled_at"] for leg in leg_fills(trade, "open").values()} == {trade["signal_at"] + delay * HOUR}
    return closed


def test_replay_and_backtest_fill_the_same_trades_at_the_same_prices(shared_candles_dir):
    config = import_market(shared_candles_dir)
    fixed_pair()
    prompt = assert_same_trades(config, 0)

    wipe_replay()
    fixed_pair()
    late = assert_same_trades(config, 1)
    # One bar of delay: the same decisions (signal times), every fill one bar later.
    assert [(t["signal_at"], t["side"]) for t in late[: len(prompt)]] == [(t["signal_at"], t["side"])
                                                                          for t in prompt[: len(late)]]
    assert all(leg_fills(t, "open")["NEOUSDT"]["filled_at"] == leg_fills(p, "open")["NEOUSDT"]["filled_at"] + HOUR
               for t, p in zip(late, prompt, strict=False))


# Binance stopped trading from 2021-04-20 02:00 to 03:59 UTC (no bar of any symbol): with the test's 150-bar z-score,
# the signals' window starts on those missing bars from 2021-04-26 09:00.
AFTER_THE_GAP = datetime(2021, 4, 26, tzinfo=UTC)


def stored_signals() -> list[tuple[datetime, str, float]]:
    return list(Signal.objects.order_by("bar_time").values_list("bar_time", "action", "zscore"))


def live_signals_on_the_stored_clock(settings, start: datetime, end: datetime) -> list[tuple[datetime, str, float]]:
    """The live signals pipeline (``signals_pipeline``: signals, then the bots) run once per bar of [start, end],
    at the demo's stored-data clock moved to each bar's close, over the stored candles."""
    settings.STATARB_MARKET_CLOCK = "stored"
    stored_clock_start(start=start + HOUR, end=end + HOUR, bar=HOUR, wall_seconds=1)
    wall = timezone.now()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        for k in range((end - start) // HOUR + 1):
            signals_pipeline.apply().get()
            stored_clock_step(wall_now=wall + timedelta(seconds=2 * (k + 1)))
    finally:
        celery_app.conf.task_always_eager = eager
    return stored_signals()


def test_backtest_replay_and_live_signals_agree_bar_for_bar_through_an_exchange_wide_gap(shared_candles_dir,
                                                                                         settings):
    """Every bar gets the same action and z-score from the vectorised backtest, the replay and the live pipeline,
    also once the z-score's window starts on bars no symbol has (the grid fills them from the bars before, as it
    fills them inside a window). The window's start stayed on those bars until the pairs advanced, so every
    pair's signals stopped for a week (MAX_CATCH_UP_BARS) in the replay and live, while the backtest traded on."""
    config = import_market(shared_candles_dir)
    start, end = AFTER_THE_GAP, AFTER_THE_GAP + timedelta(days=2, hours=23)
    pair = fixed_pair()
    _, result, times = pairs_backtest(config=config, pairs=[pair], start=start, end=end, execution_delay_bars=0)
    backtested = [(datetime.fromtimestamp(t / 1000, tz=UTC), ACTION_LABELS[a], z)
                  for t, a, z in zip(times.tolist(), result.actions[:, 0], result_zscores(config, pair, start, end),
                                     strict=True)]
    assert backtested[-1][1] == "end_of_data"  # the backtest's own close of what is open at the end
    backtested[-1] = (*backtested[-1][:1], "hold", backtested[-1][2])
    assert any(action.startswith("enter") for _, action, _ in backtested[10:]), "the data should make the rule trade"

    replay_run(start=start, end=end, config=config, reselect_every=None, execution_delay_bars=0)
    replayed = stored_signals()
    wipe_replay()
    fixed_pair()
    live = live_signals_on_the_stored_clock(settings, start, end)

    for path in (replayed, live):
        assert [(t, action) for t, action, _ in path] == [(t, action) for t, action, _ in backtested]
        assert [z for *_, z in path] == pytest.approx([z for *_, z in backtested], rel=1e-9)


def result_zscores(config, pair: Pair, start: datetime, end: datetime) -> list[float]:
    """The z-scores the backtest traded on, bar by bar (``pairs_backtest``'s rolling fit)."""
    import numpy as np

    from pairs.quant.spread_rule import rolling_zscore
    from pairs.selectors import price_window

    bars = (end - start) // HOUR + 1
    window = price_window(instruments=[pair.y_instrument, pair.x_instrument], timeframe=config.timeframe,
                          bars=bars + config.zscore_window_bars, end=end)
    column = {iid: k for k, iid in enumerate(window.instrument_ids)}
    log = np.log(window.closes)
    rolling = rolling_zscore(log[:, column[pair.y_instrument_id]], log[:, column[pair.x_instrument_id]],
                             config.zscore_window_bars)
    return rolling.zscore[config.zscore_window_bars:].tolist()
