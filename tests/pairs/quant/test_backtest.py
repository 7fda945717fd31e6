"""The vectorised backtest: hand-computed trades, fees, funding and statistics; properties over random paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairs.quant.backtest import Costs, backtest, settlements_per_bar
from pairs.quant.performance import equity_returns, sharpe_ratio, sortino_ratio
from pairs.quant.spread_rule import ACTION_LABELS, Action, PairState, RuleParams, rolling_zscore, step_one

HOUR_MS = 3_600_000
START_MS = 1_609_459_200_000  # 2021-01-01 00:00 UTC
NO_FUNDING = Costs(funding_rate=0.0)
FEE, SLIP = 0.00055, 0.0002


def hours(n_bars: int, start: int = START_MS) -> np.ndarray:
    """Open times of n hourly bars: bar k opens at start + k h and closes at start + (k + 1) h."""
    return start + HOUR_MS * np.arange(n_bars, dtype=np.int64)


def run(y, x, z, beta, costs=NO_FUNDING, params=None, **kwargs):
    y = np.asarray(y, dtype=float)
    return backtest(y, np.asarray(x, dtype=float), np.asarray(z, dtype=float), beta, params or RuleParams(), costs,
                    hours(len(y)), **kwargs)


# --- hand-computed trades -------------------------------------------------------------------------------------


def test_long_spread_entry_and_exit_at_the_mean_with_four_fills():
    y = [100, 100, 100, 102, 104, 104]
    x = [50, 50, 50, 50.5, 49, 49]
    z = [0.0, 0.0, -2.5, -1.0, 0.2, 0.0]
    result = run(y, x, z, 0.5)
    [trade] = result.trades.records()
    assert (trade["entry_bar"], trade["exit_bar"], trade["side"], trade["exit_reason"]) == (2, 4, "long", "exit")
    # long y: 1/100 = 0.01 units; short x: 0.5/50 = 0.01 units
    assert trade["qty_y"] == pytest.approx(0.01)
    assert trade["qty_x"] == pytest.approx(-0.01)
    gross = 0.01 * (104 - 100) - 0.01 * (49 - 50)  # 0.05
    fills = 1.0 + 0.5 + 0.01 * 104 + 0.01 * 49  # 3.03
    assert trade["gross_pnl"] == pytest.approx(gross)
    assert trade["fees"] == pytest.approx(FEE * fills)  # 0.0016665
    assert trade["slippage"] == pytest.approx(SLIP * fills)  # 0.000606
    assert trade["funding"] == 0.0
    assert trade["net_pnl"] == pytest.approx(0.0477275)
    assert trade["ret"] == pytest.approx(0.0477275 / 1.5)
    assert trade["bars_held"] == 2
    # Mark-to-market: flat at 1, entry fills' costs on bar 2, open PnL on bar 3, realised from bar 4.
    entry_cost = (FEE + SLIP) * 1.5
    bar_3 = 0.01 * 2 - 0.01 * 0.5 - entry_cost
    np.testing.assert_allclose(
        result.equity[:, 0],
        [1, 1, 1 - entry_cost / 1.5, 1 + bar_3 / 1.5, 1 + 0.0477275 / 1.5, 1 + 0.0477275 / 1.5],
    )
    stats = result.statistics[0]
    assert stats.trades == 1
    assert stats.win_rate == 1.0
    assert stats.profit_factor == math.inf
    assert stats.total_return == pytest.approx(0.0477275 / 1.5)
    assert stats.max_drawdown == 0.0
    assert stats.avg_holding_bars == 2.0


def test_no_entry_at_or_beyond_the_stop_in_the_backtest():
    # A short-spread signal at z = 10.95 (a pump's close) is no trade; the same pair enters once z is back inside
    # (entry_z, stop_z).
    y = [10, 10, 14.5, 14, 13, 13]
    x = [20, 20, 20, 20, 20, 20]
    z = [0.0, 4.0, 10.95, 3.5, 0.0, 0.0]
    [trade] = run(y, x, z, 1.0).trades.records()
    assert (trade["entry_bar"], trade["exit_bar"], trade["side"], trade["exit_reason"]) == (3, 4, "short", "exit")


def test_short_spread_stop():
    y = [10, 10, 11, 12, 12]
    x = [20, 20, 20, 21, 21]
    z = [0.0, 2.5, 3.0, 4.2, 0.0]
    [trade] = run(y, x, z, 1.0).trades.records()
    assert (trade["entry_bar"], trade["exit_bar"], trade["side"], trade["exit_reason"]) == (1, 3, "short", "stop")
    # short y 0.1 units, long x 1/20 = 0.05 units
    assert (trade["qty_y"], trade["qty_x"]) == pytest.approx((-0.1, 0.05))
    fills = 1 + 1 + 0.1 * 12 + 0.05 * 21  # 4.25
    assert trade["gross_pnl"] == pytest.approx(-0.2 + 0.05)
    assert trade["fees"] == pytest.approx(0.0023375)
    assert trade["slippage"] == pytest.approx(SLIP * fills)
    assert trade["net_pnl"] == pytest.approx(-0.1531875)
    assert trade["ret"] == pytest.approx(-0.07659375)


def test_max_holding_then_end_of_data():
    z = [-2.5] * 6
    result = run(np.full(6, 100.0), np.full(6, 50.0), z, 1.0, max_holding_bars=3)
    trades = result.trades.records()
    assert [(t["entry_bar"], t["exit_bar"], t["exit_reason"]) for t in trades] == [
        (0, 3, "max_holding"), (4, 5, "end_of_data")
    ]
    # flat prices: each trade loses exactly its four fills, 2 + 2 notional
    for trade in trades:
        assert trade["net_pnl"] == pytest.approx(-(FEE + SLIP) * 4)
        assert trade["ret"] == pytest.approx(-(FEE + SLIP) * 2)
    assert [ACTION_LABELS[a] for a in result.actions[:, 0]] == [
        "enter_long", "hold", "hold", "max_holding", "enter_long", "end_of_data"
    ]


def test_cooldown_after_a_stop_blocks_reentry_for_exactly_cooldown_bars():
    z = [-2.5, -4.5, -3.0, -3.0, -3.0, -1.0, 0.0]
    result = run(np.full(7, 1.0), np.full(7, 1.0), z, 1.0, params=RuleParams(cooldown_bars=2))
    trades = result.trades.records()
    # stop on bar 1; bars 2 and 3 blocked; entry on bar 4, exit at the mean on bar 6
    assert [(t["entry_bar"], t["exit_bar"], t["exit_reason"]) for t in trades] == [(0, 1, "stop"), (4, 6, "exit")]


def test_no_entry_on_the_last_bar():
    result = run(np.full(3, 1.0), np.full(3, 1.0), [0.0, 0.0, -3.0], 1.0)
    assert len(result.trades) == 0
    assert result.actions[:, 0].tolist() == [Action.HOLD] * 3


@pytest.mark.parametrize(
    ("side_z", "beta", "qty_y", "qty_x", "gross"),
    [
        # long spread, beta < 0: long y (0.01) and long x (0.5/50 = 0.01): both legs gain 2 per unit
        (-2.5, -0.5, 0.01, 0.01, 0.04),
        # short spread, beta < 0: both short
        (2.5, -0.5, -0.01, -0.01, -0.04),
        # short spread, beta > 0: short y, long x
        (2.5, 0.5, -0.01, 0.01, 0.0),
    ],
)
def test_sides_of_the_legs_follow_the_sign_of_beta(side_z, beta, qty_y, qty_x, gross):
    y = [100, 100, 102]
    x = [50, 50, 52]
    [trade] = run(y, x, [0.0, side_z, 0.0], beta).trades.records()
    assert (trade["qty_y"], trade["qty_x"]) == pytest.approx((qty_y, qty_x))
    assert trade["hedge_ratio"] == beta
    assert trade["gross_pnl"] == pytest.approx(gross)
    fills = 1 + 0.5 + 1.02 + 0.52
    assert trade["fees"] == pytest.approx(FEE * fills)
    assert trade["ret"] == pytest.approx((gross - (FEE + SLIP) * fills) / 1.5)


def test_only_the_entry_bars_hedge_ratio_sizes_the_trade():
    y, x, z = [100, 100, 100, 100], [50, 50, 51, 52], [0.0, -2.5, -1.0, 0.0]
    fixed = run(y, x, z, 0.5).trades.records()
    per_bar = run(y, x, z, np.array([9.0, 0.5, 3.0, -7.0])).trades.records()
    assert per_bar == fixed


# --- funding --------------------------------------------------------------------------------------------------

# Eleven hourly bars from 00:00 UTC: bar 7 opens at 07:00 and closes at the 08:00 settlement.
FUNDING_Y = np.array([100.0] * 7 + [110.0] + [100.0] * 3)
FUNDING_X = np.array([40.0] * 7 + [30.0] + [40.0] * 3)


def funding_z(entry_bar: int, exit_bar: int, *, long: bool = True) -> np.ndarray:
    """Flat (z = 0) except an entry at entry_bar, held at |z| = 1, exit (z crosses the mean) at exit_bar."""
    z = np.zeros(11)
    z[entry_bar] = -2.5
    z[entry_bar + 1 : exit_bar] = -1.0
    z[exit_bar] = 0.5
    return z if long else -z


def test_funding_of_a_position_spanning_one_settlement():
    # Long spread, beta 2, entered at the 06:00 close, exited at the 10:00 close; settlement at 08:00 at bar 7's
    # prices: long 0.01 y pays 0.0001 * 0.01 * 110; short 2/40 = 0.05 x receives 0.0001 * 0.05 * 30.
    [trade] = run(FUNDING_Y, FUNDING_X, funding_z(5, 9), 2.0, costs=Costs()).trades.records()
    assert (trade["entry_bar"], trade["exit_bar"]) == (5, 9)
    assert trade["funding_y"] == pytest.approx(-0.00011)
    assert trade["funding_x"] == pytest.approx(0.00015)
    assert trade["funding"] == pytest.approx(0.00004)
    assert trade["gross_pnl"] == pytest.approx(0.0)
    assert trade["net_pnl"] == pytest.approx(0.00004 - (FEE + SLIP) * 6)


def test_short_spread_receives_on_y_and_pays_on_x():
    [trade] = run(FUNDING_Y, FUNDING_X, funding_z(5, 9, long=False), 2.0, costs=Costs()).trades.records()
    assert trade["side"] == "short"
    assert trade["funding_y"] == pytest.approx(0.00011)
    assert trade["funding_x"] == pytest.approx(-0.00015)


def test_position_opened_exactly_at_the_settlement_does_not_pay_it():
    [trade] = run(FUNDING_Y, FUNDING_X, funding_z(7, 9), 2.0, costs=Costs()).trades.records()
    assert trade["entry_bar"] == 7
    assert trade["funding_y"] == 0.0
    assert trade["funding_x"] == 0.0


def test_position_closed_exactly_at_the_settlement_pays_it():
    [trade] = run(FUNDING_Y, FUNDING_X, funding_z(5, 7), 2.0, costs=Costs()).trades.records()
    assert trade["exit_bar"] == 7
    assert trade["funding_y"] == pytest.approx(-0.00011)
    assert trade["funding_x"] == pytest.approx(0.00015)


def test_negative_default_rate_makes_longs_receive():
    [trade] = run(FUNDING_Y, FUNDING_X, funding_z(5, 9), 2.0, costs=Costs(funding_rate=-0.0001)).trades.records()
    assert trade["funding_y"] == pytest.approx(0.00011)
    assert trade["funding_x"] == pytest.approx(-0.00015)


def test_funding_rate_arrays_with_nan_falling_back_to_the_default():
    rate_y = np.full(11, np.nan)
    rate_y[7] = 0.0003
    rate_x = np.full(11, np.nan)
    [trade] = run(FUNDING_Y, FUNDING_X, funding_z(5, 9), 2.0, costs=Costs(), funding_rate_y=rate_y,
                  funding_rate_x=rate_x).trades.records()
    assert trade["funding_y"] == pytest.approx(-0.01 * 0.0003 * 110)
    assert trade["funding_x"] == pytest.approx(0.05 * 0.0001 * 30)


def test_a_day_long_position_pays_three_settlements_and_the_interval_is_configurable():
    n_bars = 26
    z = np.zeros(n_bars)
    z[0] = -2.5
    z[1:24] = -1.0
    # entered at the 01:00 close, exited at 01:00 next day: 08:00, 16:00 and 00:00 settle
    [trade] = run(np.full(n_bars, 100.0), np.full(n_bars, 40.0), z, 1.0, costs=Costs()).trades.records()
    assert trade["exit_bar"] == 24
    assert trade["funding_y"] == pytest.approx(-3 * 0.0001 * 0.01 * 100)
    assert trade["funding_x"] == pytest.approx(3 * 0.0001 * 0.025 * 40)
    hourly = Costs(funding_interval_minutes=60)
    [trade] = run(np.full(n_bars, 100.0), np.full(n_bars, 40.0), z, 1.0, costs=hourly).trades.records()
    assert trade["funding_y"] == pytest.approx(-24 * 0.0001 * 0.01 * 100)


def test_settlement_counts_per_bar():
    counts = settlements_per_bar(hours(25), HOUR_MS, Costs())
    assert np.flatnonzero(counts).tolist() == [7, 15, 23]
    # 4-hour bars from 00:00: 08:00 closes bar 1, 16:00 bar 3, 00:00 bar 5
    four_hourly = settlements_per_bar(START_MS + 4 * HOUR_MS * np.arange(6), 4 * HOUR_MS, Costs())
    assert four_hourly.tolist() == [0, 1, 0, 1, 0, 1]
    # daily bars settle three times each
    assert settlements_per_bar(START_MS + 24 * HOUR_MS * np.arange(3), 24 * HOUR_MS, Costs()).tolist() == [3, 3, 3]


def test_datetime64_times_match_epoch_ms():
    z = funding_z(5, 9)
    by_ms = run(FUNDING_Y, FUNDING_X, z, 2.0, costs=Costs()).trades.records()
    by_datetime = backtest(FUNDING_Y, FUNDING_X, z, 2.0, RuleParams(), Costs(),
                           hours(11).astype("datetime64[ms]").astype("datetime64[ns]")).trades.records()
    assert by_datetime == by_ms


# --- statistics and validation --------------------------------------------------------------------------------


def test_sharpe_and_sortino_of_daily_mark_to_market_returns():
    rng = np.random.default_rng(5)
    n_bars = 72
    y = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    x = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    z = np.tile([0.0, -2.5, -1.0, 0.5, 2.5, 1.0, -0.5, 0.0], 9)
    result = run(y, x, z, 0.8, costs=Costs())
    daily = np.concatenate(([1.0], result.equity[[23, 47, 71], 0]))
    returns = equity_returns(daily)
    stats = result.statistics[0]
    assert stats.sharpe == pytest.approx(sharpe_ratio(returns, 365))
    assert stats.sortino == pytest.approx(sortino_ratio(returns, 365))
    assert result.equity[-1, 0] == pytest.approx(1 + stats.total_return)


def test_no_trades_gives_empty_statistics():
    stats = run(np.full(30, 1.0), np.full(30, 1.0), np.zeros(30), 1.0).statistics[0]
    assert stats.trades == 0
    assert stats.win_rate is None and stats.profit_factor is None and stats.avg_holding_bars is None
    assert stats.total_return == 0.0 and stats.max_drawdown == 0.0
    assert stats.sharpe is None


@pytest.mark.parametrize(
    "change",
    [
        {"y": [1.0, np.nan, 1.0]},
        {"x": [1.0, 0.0, 1.0]},
        {"times": START_MS + np.array([0, 2, 1]) * HOUR_MS},
    ],
)
def test_invalid_inputs_are_rejected(change):
    inputs = {"y": [1.0, 1.0, 1.0], "x": [1.0, 1.0, 1.0], "times": hours(3)}
    inputs.update(change)
    with pytest.raises(ValueError):
        backtest(np.array(inputs["y"]), np.array(inputs["x"]), np.zeros(3), 1.0, RuleParams(), Costs(),
                 inputs["times"])


# --- properties -----------------------------------------------------------------------------------------------

z_values = st.one_of(st.floats(-6, 6, allow_nan=False), st.just(math.nan))
params_strategy = st.builds(
    RuleParams,
    entry_z=st.sampled_from([1.0, 2.0]),
    exit_z=st.sampled_from([-0.5, 0.0, 0.5]),
    stop_z=st.sampled_from([3.0, 4.0, math.inf]),
    cooldown_bars=st.integers(0, 5),
)
holding = st.one_of(st.integers(1, 8).map(float), st.just(math.inf))


def random_prices(seed: int, n_bars: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_x = np.log(50.0) + np.cumsum(rng.normal(0, 0.01, (n_bars, n_pairs)), axis=0)
    log_y = np.log(100.0) + 0.7 * (log_x - np.log(50.0)) + np.cumsum(rng.normal(0, 0.005, (n_bars, n_pairs)), axis=0)
    return np.exp(log_y), np.exp(log_x)


@settings(max_examples=100, deadline=None)
@given(z=st.lists(z_values, min_size=2, max_size=60), params=params_strategy, limit=holding)
def test_live_step_and_backtest_take_the_same_actions(z, params, limit):
    z = np.array(z)
    n_bars = len(z)
    result = backtest(np.ones(n_bars), np.ones(n_bars), z, 1.0, params, Costs(), hours(n_bars),
                      max_holding_bars=limit)
    state = PairState()
    for t in range(n_bars):
        action, state = step_one(state, z[t], params, max_holding_bars=limit, bar_index=t)
        taken = result.actions[t, 0]
        if t < n_bars - 1:
            assert taken == action
        elif action in (Action.ENTER_LONG, Action.ENTER_SHORT):
            assert taken == Action.HOLD  # no entry on the last bar
        elif action == Action.HOLD and state.position != 0:
            assert taken == Action.END_OF_DATA
        else:
            assert taken == action
    # and the trade list says the same
    for trade in result.trades.records():
        assert ACTION_LABELS[result.actions[trade["entry_bar"], 0]] == f"enter_{trade['side']}"
        assert result.actions[trade["exit_bar"], 0] == Action[trade["exit_reason"].upper()]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), z=st.lists(st.lists(z_values, min_size=3, max_size=3), min_size=2, max_size=80),
       params=params_strategy, limit=holding, fee=st.sampled_from([0.0, 0.00055, 0.002]))
def test_statistics_agree_with_the_trade_list(seed, z, params, limit, fee):
    z = np.array(z)
    y, x = random_prices(seed, len(z), 3)
    beta = np.random.default_rng(seed).uniform(-2, 2, z.shape)
    result = backtest(y, x, z, beta, params, Costs(taker_fee=fee), hours(len(z)), max_holding_bars=limit)
    # every entry has exactly one close, end_of_data included
    entries = np.isin(result.actions, [Action.ENTER_LONG, Action.ENTER_SHORT]).sum()
    closes = np.isin(result.actions, [Action.EXIT, Action.STOP, Action.MAX_HOLDING, Action.END_OF_DATA]).sum()
    assert entries == closes == len(result.trades)
    for pair in range(3):
        trades = result.trades_of(pair)
        stats = result.statistics[pair]
        returns = trades.ret.tolist()
        assert stats.trades == len(returns)
        assert np.all(trades.exit_bar > trades.entry_bar)
        assert np.all(trades.entry_bar[1:] > trades.exit_bar[:-1])  # one position at a time, no same-bar reversal
        np.testing.assert_allclose(trades.net_pnl, trades.gross_pnl - trades.fees - trades.slippage + trades.funding)
        np.testing.assert_allclose(trades.ret, trades.net_pnl / (1 + np.abs(trades.hedge_ratio)))
        wins = [r for r in returns if r > 0]
        losses = [-r for r in returns if r < 0]
        if not returns:
            assert stats.win_rate is None and stats.profit_factor is None
            continue
        assert stats.win_rate == pytest.approx(len(wins) / len(returns))
        if losses:
            assert stats.profit_factor == pytest.approx(sum(wins) / sum(losses))
        else:
            assert stats.profit_factor == (math.inf if wins else None)
        assert stats.total_return == pytest.approx(sum(returns))
        assert stats.avg_holding_bars == pytest.approx(float(np.mean(trades.bars_held)))
        assert result.equity[-1, pair] == pytest.approx(1 + sum(returns))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(20, 118), params=params_strategy, limit=holding,
       scale=st.floats(0.01, 0.5))
def test_nothing_up_to_a_bar_depends_on_later_bars(seed, cut, params, limit, scale):
    n_bars, window = 120, 20
    y, x = random_prices(seed, n_bars, 2)
    rate = np.random.default_rng(seed).normal(0.0001, 0.0002, (n_bars, 2))

    def full_run(y, x, rate):
        fit = rolling_zscore(np.log(y), np.log(x), window)
        result = backtest(y, x, fit.zscore, fit.hedge_ratio, params, Costs(), hours(len(y)), rate, rate[:, ::-1],
                          max_holding_bars=limit)
        return fit, result

    base_fit, base = full_run(y, x, rate)
    rng = np.random.default_rng(seed + 1)
    y2, x2, rate2 = y.copy(), x.copy(), rate.copy()
    y2[cut + 1 :] *= np.exp(rng.normal(0, scale, y2[cut + 1 :].shape))
    x2[cut + 1 :] *= np.exp(rng.normal(0, scale, x2[cut + 1 :].shape))
    rate2[cut + 1 :] = rng.normal(0, 0.01, rate2[cut + 1 :].shape)
    fit, perturbed = full_run(y2, x2, rate2)

    np.testing.assert_array_equal(fit.zscore[: cut + 1], base_fit.zscore[: cut + 1])
    np.testing.assert_array_equal(perturbed.actions[: cut + 1], base.actions[: cut + 1])
    np.testing.assert_array_equal(perturbed.equity[: cut + 1], base.equity[: cut + 1])
    closed = base.trades.select(base.trades.exit_bar <= cut).records()
    assert perturbed.trades.select(perturbed.trades.exit_bar <= cut).records() == closed
    # and a backtest that ends at the cut has the same trades closed before it
    _, truncated = full_run(y[: cut + 1], x[: cut + 1], rate[: cut + 1])
    assert truncated.trades.select(truncated.trades.exit_bar < cut).records() == [
        t for t in closed if t["exit_bar"] < cut
    ]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), params=params_strategy)
def test_pairs_are_independent_of_each_other(seed, params):
    y, x = random_prices(seed, 150, 3)
    fit = rolling_zscore(np.log(y), np.log(x), 30)
    limits = np.array([5.0, math.inf, 12.0])
    together = backtest(y, x, fit.zscore, fit.hedge_ratio, params, Costs(), hours(150), max_holding_bars=limits)
    for pair in range(3):
        alone = backtest(y[:, pair], x[:, pair], fit.zscore[:, pair], fit.hedge_ratio[:, pair], params, Costs(),
                         hours(150), max_holding_bars=limits[pair])
        expected = [dict(t, pair=pair) for t in alone.trades.records()]
        assert together.trades_of(pair).records() == expected
        assert together.statistics[pair] == alone.statistics[0]
        np.testing.assert_array_equal(together.equity[:, pair], alone.equity[:, 0])
