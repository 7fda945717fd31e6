"""The execution model in the backtest: fills at the next bar's open (after a delay), slippage fixed + variable."""

from __future__ import annotations

import numpy as np
import pytest

from pairs.quant.backtest import Costs, backtest
from pairs.quant.fills import SlippageModel, check_delay, fill_opens
from pairs.quant.spread_rule import RuleParams

HOUR_MS = 3_600_000
START_MS = 1_609_459_200_000  # 2021-01-01 00:00 UTC
FEE = 0.00055
NO_FUNDING = Costs(funding_rate=0.0, slippage=0.0)

# Closes and opens that differ on every bar: a fill at the signal bar's close would show up at once.
CLOSES_Y = [100, 100, 100, 102, 104, 104, 105]
OPENS_Y = [100, 99, 101, 103, 105, 106, 107]
CLOSES_X = [50, 50, 50, 50.5, 49, 49, 48]
OPENS_X = [50, 51, 52, 50, 48, 47, 46]
Z = [0.0, 0.0, -2.5, -1.0, 0.2, 0.0, 0.0]  # long entry decided on bar 2, exit at the mean on bar 4


def hours(n_bars: int) -> np.ndarray:
    return START_MS + HOUR_MS * np.arange(n_bars, dtype=np.int64)


def run(costs=NO_FUNDING, **kwargs):
    kwargs = {"opens_y": np.array(OPENS_Y, float), "opens_x": np.array(OPENS_X, float), **kwargs}
    return backtest(np.array(CLOSES_Y, float), np.array(CLOSES_X, float), np.array(Z), 0.5, RuleParams(), costs,
                    hours(len(Z)), **kwargs)


def test_a_decision_on_a_bar_fills_at_the_next_bars_open():
    result = run()
    [trade] = result.trades.records()
    assert (trade["entry_bar"], trade["exit_bar"], trade["exit_reason"]) == (2, 4, "exit")
    # entry decided at bar 2's close fills at bar 3's open; exit decided at bar 4's close at bar 5's open
    assert (trade["entry_price_y"], trade["entry_price_x"]) == (103, 50)
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (106, 47)
    assert trade["entry_fill_ms"] == START_MS + 3 * HOUR_MS
    assert trade["exit_fill_ms"] == START_MS + 5 * HOUR_MS
    qty_y, qty_x = 1 / 103, -0.5 / 50
    assert (trade["qty_y"], trade["qty_x"]) == pytest.approx((qty_y, qty_x))
    assert trade["gross_pnl"] == pytest.approx(qty_y * 3 + qty_x * (47 - 50))
    assert trade["bars_held"] == 2
    # marked at closes from the entry's reference bar (2) on: bar 2's close against the entry fill at bar 3's open
    entry_cost = FEE * 1.5
    bar_2 = qty_y * (100 - 103) + qty_x * (50 - 50) - entry_cost
    assert result.equity[2, 0] == pytest.approx(1 + bar_2 / 1.5)
    assert result.equity[1, 0] == 1.0
    assert result.equity[-1, 0] == pytest.approx(1 + trade["ret"])


def test_one_bar_of_delay_shifts_every_fill_by_one_bar():
    [base] = run().trades.records()
    [late] = run(execution_delay_bars=1).trades.records()
    assert (late["entry_bar"], late["exit_bar"]) == (base["entry_bar"], base["exit_bar"])  # same decisions
    assert (late["entry_price_y"], late["entry_price_x"]) == (OPENS_Y[4], OPENS_X[4])
    assert (late["exit_price_y"], late["exit_price_x"]) == (OPENS_Y[6], OPENS_X[6])
    assert late["entry_fill_ms"] - base["entry_fill_ms"] == HOUR_MS
    assert late["exit_fill_ms"] - base["exit_fill_ms"] == HOUR_MS


def test_a_close_without_a_later_open_fills_at_the_last_close():
    # with 2 bars of delay the exit decided on bar 4 would fill at bar 7's open: there is none
    [trade] = run(execution_delay_bars=2).trades.records()
    assert (trade["entry_price_y"], trade["entry_price_x"]) == (OPENS_Y[5], OPENS_X[5])
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (CLOSES_Y[6], CLOSES_X[6])
    assert trade["exit_reason"] == "exit"
    assert trade["exit_fill_ms"] == START_MS + 7 * HOUR_MS  # the last bar's close


def test_no_entry_whose_fill_comes_too_late_to_be_held():
    # with 3 bars of delay the entry decided on bar 2 fills at the last bar's open and is held through that bar
    [trade] = run(execution_delay_bars=3).trades.records()
    assert (trade["entry_price_y"], trade["exit_price_y"]) == (OPENS_Y[6], CLOSES_Y[6])
    # with 4 it would fill after the last bar: not taken
    result = run(execution_delay_bars=4)
    assert len(result.trades) == 0
    assert (result.equity == 1.0).all()


def test_without_opens_the_fill_is_the_previous_close():
    result = backtest(np.array(CLOSES_Y, float), np.array(CLOSES_X, float), np.array(Z), 0.5, RuleParams(),
                      NO_FUNDING, hours(len(Z)))
    [trade] = result.trades.records()
    assert (trade["entry_price_y"], trade["exit_price_y"]) == (CLOSES_Y[2], CLOSES_Y[4])
    np.testing.assert_array_equal(fill_opens([np.nan, 7.0, np.nan], np.array([1.0, 2.0, 3.0])), [1.0, 7.0, 2.0])


def test_fixed_plus_range_slippage_hand_computed():
    highs_y = np.array([101, 101, 102, 104, 106, 107, 108], float)
    lows_y = np.array([99, 98, 98, 101, 103, 104, 104], float)
    highs_x = np.array([51, 52, 53, 51, 49, 48, 47], float)
    lows_x = np.array([49, 50, 49, 49.5, 47, 46, 45], float)
    costs = Costs(funding_rate=0.0, taker_fee=0.0, slippage=0.0002, slippage_model="range", slippage_factor=0.1)
    opens_y, opens_x = np.array(OPENS_Y, float), np.array(OPENS_X, float)
    result = run(costs, slippage_y=costs.slippage_fractions(opens_y, highs_y, lows_y),
                 slippage_x=costs.slippage_fractions(opens_x, highs_x, lows_x))
    [trade] = result.trades.records()
    # entry fills at bar 3's open, reference bar 2: y range (102 - 98) / 101, x range (53 - 49) / 52
    entry_y, entry_x = 0.0002 + 0.1 * 4 / 101, 0.0002 + 0.1 * 4 / 52
    # exit fills at bar 5's open, reference bar 4: y (106 - 103) / 105, x (49 - 47) / 48
    exit_y, exit_x = 0.0002 + 0.1 * 3 / 105, 0.0002 + 0.1 * 2 / 48
    assert (trade["entry_slippage_y"], trade["entry_slippage_x"]) == pytest.approx((entry_y, entry_x))
    assert (trade["exit_slippage_y"], trade["exit_slippage_x"]) == pytest.approx((exit_y, exit_x))
    qty_y, qty_x = 1 / 103, 0.5 / 50
    expected = entry_y * 1 + entry_x * 0.5 + exit_y * qty_y * 106 + exit_x * qty_x * 47
    assert trade["slippage"] == pytest.approx(expected)
    assert trade["net_pnl"] == pytest.approx(trade["gross_pnl"] - expected)


def test_volume_slippage_is_the_reference_orders_share_of_the_turnover():
    model = SlippageModel(fixed=0.0001, model="volume", factor=0.5, reference_notional=1000.0)
    np.testing.assert_allclose(model.fraction(np.ones(3), None, None, [1e6, np.nan, 0.0]),
                               [0.0001 + 0.5 * 1000 / 1e6, 0.0001, 0.0001])
    costs = Costs(slippage_model="volume", slippage_factor=0.5)
    with pytest.raises(ValueError, match="turnover"):
        costs.slippage_fractions(np.ones(3))
    with pytest.raises(ValueError, match="highs and lows"):
        Costs(slippage_factor=0.1).slippage_fractions(np.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"execution_delay_bars": -1}, "execution_delay_bars"),
        ({"execution_delay_bars": 1.5}, "execution_delay_bars"),
        ({"slippage_y": np.full(7, 1.5)}, "slippage_y"),
        ({"opens_y": np.ones((3, 2))}, "opens_y"),
    ],
)
def test_bad_execution_inputs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(**kwargs)


def test_bad_slippage_settings_are_named():
    with pytest.raises(ValueError, match="slippage model 'depth'"):
        Costs(slippage_model="depth")
    with pytest.raises(ValueError, match="slippage factor"):
        Costs(slippage_factor=-1.0)
    assert check_delay(2) == 2


@pytest.mark.parametrize(
    ("z", "kwargs", "reason", "exit_signal_bar"),
    [
        ([0.0, 2.5, 3.0, 4.2, 0.0, 0.0, 0.0], {}, "stop", 3),
        ([0.0, 2.5, 3.0, 3.0, 3.0, 3.0, 3.0], {"max_holding_bars": 2}, "max_holding", 3),
    ],
)
def test_stops_and_time_stops_fill_at_the_next_open_too(z, kwargs, reason, exit_signal_bar):
    result = backtest(np.array(CLOSES_Y, float), np.array(CLOSES_X, float), np.array(z), 1.0, RuleParams(),
                      NO_FUNDING, hours(len(z)), opens_y=np.array(OPENS_Y, float), opens_x=np.array(OPENS_X, float),
                      **kwargs)
    trade = result.trades.records()[0]
    assert (trade["entry_bar"], trade["exit_bar"], trade["exit_reason"]) == (1, exit_signal_bar, reason)
    assert (trade["entry_price_y"], trade["entry_price_x"]) == (OPENS_Y[2], OPENS_X[2])
    assert (trade["exit_price_y"], trade["exit_price_x"]) == (OPENS_Y[exit_signal_bar + 1],
                                                              OPENS_X[exit_signal_bar + 1])
