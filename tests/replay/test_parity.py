"""One execution model: the replay (signals -> bot -> paper exchange) and the vectorised backtest fill the same
trades at the same prices, at the next bar's open and, with one bar of delay, one bar later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pairs.models import Instrument, Level, Pair
from replay.report import replay_trades
from replay.run import replay_run
from replay.sensitivity import pairs_backtest
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
