"""The walk-forward engine on synthetic markets whose trades are known in advance (``walkforward_data``)."""

from dataclasses import replace

import numpy as np
import pytest

from pairs.quant.screening import merge_and_adjust, screen
from pairs.quant.walkforward import (
    Market,
    WalkForwardParams,
    form,
    level_numbers,
    periods,
    run_walkforward,
    universe_at,
)
from tests.pairs.quant.walkforward_data import LADDER, PARAMS, market, spike_bars

WEEK = 168
FIRST = PARAMS.history_bars()


def _run(m: Market, n_periods: int = 4, params=PARAMS):
    schedule = periods(m, start_bar=FIRST, end_bar=FIRST + n_periods * WEEK, every_bars=WEEK, params=params)
    return schedule, run_walkforward(m, schedule, [params], LADDER)[0]


@pytest.fixture(scope="module")
def base():
    m = market(FIRST + 4 * WEEK)
    schedule, results = _run(m)
    return m, schedule, results


def _pair_rows(result, y, x):
    """Index of the direction (y, x) or (x, y) in the period's pool, and its orientation (+1: y on x)."""
    for k, (a, b) in enumerate(zip(result.y, result.x, strict=True)):
        if (a, b) == (y, x):
            return k, 1
        if (a, b) == (x, y):
            return k, -1
    raise AssertionError(f"pair {y}/{x} not in the pool of {result.period}")


@pytest.mark.parametrize("zscore", ["rolling", "frozen"])
def test_the_constructed_pair_trades_exactly_its_spikes(zscore):
    m = market(FIRST + 4 * WEEK)
    _, results = _run(m, params=replace(PARAMS, trade_zscore=zscore))
    bars, signs = spike_bars(len(m.times_ms))
    for result in results:
        k, orientation = _pair_rows(result, 1, 0)
        mine = result.pair == k
        period = result.period
        inside = (bars >= period.trade_start) & (bars < period.trade_end - 1)  # no entry on the last bar
        np.testing.assert_array_equal(result.entry_bar[mine], bars[inside])
        np.testing.assert_array_equal(result.exit_bar[mine], bars[inside] + 1)
        # A spike up of y's spread is a short spread; seen as x on y, the spread is mirrored.
        np.testing.assert_array_equal(result.side[mine], -signs[inside] * orientation)
        assert (result.ret[mine] > 0.015).all()  # about 2.5 A of log spread over a gross notional of 2, net
        assert result.level[k] == 1  # promoted on its validation trades


def test_periods_are_forward_in_time(base):
    m, schedule, _ = base
    assert len(schedule) == 4
    for k, period in enumerate(schedule):
        assert period.trade_start == FIRST + k * WEEK
        assert period.trade_end == period.trade_start + WEEK
        assert period.formation_end - period.formation_start == PARAMS.lookback_bars
        assert period.trade_start - period.formation_end == PARAMS.validation_bars  # validation after formation
    with pytest.raises(ValueError, match="needs 1500 bars of history"):
        periods(m, start_bar=FIRST - 1, end_bar=FIRST + WEEK, every_bars=WEEK, params=PARAMS)


def test_formation_reads_no_bar_after_it_and_promotion_comes_from_validation_only():
    m = market(FIRST + WEEK)
    schedule, results = _run(m, n_periods=1)
    period = schedule[0]
    # Remove the spikes from the validation bars only: the formation (pool, frozen fit) cannot change, but the
    # pair has no validation trades any more, so it is not promoted.
    closes = m.closes.copy()
    bars, signs = spike_bars(len(m.times_ms))
    spiked = bars[(bars >= period.formation_end) & (bars < period.trade_start)]
    closes[spiked, 1] /= np.exp(2.5 * 0.02 * signs[np.isin(bars, spiked)])
    calm = Market(m.times_ms, closes, m.turnover, m.symbols, m.bar_ms)
    before, after = form(m, period, PARAMS), form(calm, period, PARAMS)
    for name in ("y", "x", "hedge_ratio", "intercept", "spread_mean", "spread_std", "qvalue"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))
    _, calm_results = _run(calm, n_periods=1)
    k, _ = _pair_rows(results[0], 1, 0)
    assert results[0].level[k] == 1 and calm_results[0].level[k] == 0


def test_no_look_ahead_truncating_after_a_period_changes_nothing_in_it(base):
    m, schedule, results = base
    for k in (0, 2):
        _, cut = _run(m.truncated(schedule[k].trade_end), n_periods=k + 1)
        for name in ("universe", "y", "x", "level", "pair", "ret", "exit_ms", "entry_bar", "exit_bar", "side"):
            np.testing.assert_array_equal(getattr(cut[k], name), getattr(results[k], name), err_msg=name)


def test_one_direction_per_unordered_pair(base):
    _, _, results = base
    for result in results:
        unordered = {frozenset((int(a), int(b))) for a, b in zip(result.y, result.x, strict=True)}
        assert len(unordered) == len(result.y)


def test_the_false_discovery_control_counts_each_unordered_pair_once():
    m = market(FIRST + WEEK)
    period = periods(m, start_bar=FIRST, end_bar=FIRST + WEEK, every_bars=WEEK, params=PARAMS)[0]
    log_closes = np.log(m.closes[period.formation_start:period.formation_end])
    merged = merge_and_adjust([screen(log_closes)])
    assert np.isfinite(merged.qvalue).sum() == 4 * 3 // 2  # 12 directions tested, 6 hypotheses in the family
    pool = form(m, period, PARAMS)
    keep = merged.preferred & np.isin(merged.y_index, pool.y) & np.isin(merged.x_index, pool.x)
    assert set(pool.qvalue) <= set(merged.qvalue[keep])


def test_point_in_time_universe_leaves_out_a_later_listing_and_an_illiquid_symbol():
    listing = 300
    m = market(FIRST + 6 * WEEK, late_listing_bar=listing, illiquid=True)
    schedule, results = _run(m, n_periods=6)
    for period, result in zip(schedule, results, strict=True):
        listed_long_enough = listing <= period.formation_end - PARAMS.min_history_bars
        assert (2 in result.universe) == listed_long_enough
        assert 3 not in result.universe  # DDD: turnover a thousandth of the minimum
        assert {0, 1} <= set(result.universe.tolist())
    assert any(2 in r.universe for r in results) and any(2 not in r.universe for r in results)


def test_universe_reads_turnover_before_the_formation_end_only():
    m = market(FIRST + WEEK, illiquid=True)
    end = 1000
    turnover = m.turnover.copy()
    turnover[end:, 3] = 1e12  # DDD becomes liquid only after the formation end
    later = Market(m.times_ms, m.closes, turnover, m.symbols, m.bar_ms)
    assert 3 not in universe_at(later, 0, end, PARAMS)
    assert 3 in universe_at(later, 0, end + 7 * 24, PARAMS)
    unknown = Market(m.times_ms, m.closes, np.full(m.closes.shape, np.nan), m.symbols, m.bar_ms)
    assert 3 in universe_at(unknown, 0, end, PARAMS)  # unknown turnover passes, as in the live universe


def test_the_grid_shares_screens_and_points_differ_by_their_rule():
    m = market(FIRST + 2 * WEEK)
    schedule = periods(m, start_bar=FIRST, end_bar=FIRST + 2 * WEEK, every_bars=WEEK, params=PARAMS)
    strict = PARAMS.with_values({"entry_z": 3.9, "stop_z": 5.0})
    plain, high = run_walkforward(m, schedule, [PARAMS, strict], LADDER)
    for a, b in zip(plain, high, strict=True):
        np.testing.assert_array_equal(a.y, b.y)
        assert len(b.ret) < len(a.ret)


def test_params_reject_unknown_names_and_wrong_types():
    with pytest.raises(ValueError, match=r"unknown parameter.*entry"):
        PARAMS.with_values({"entry": 2})
    with pytest.raises(ValueError, match="lookback_bars must be a int"):
        PARAMS.with_values({"lookback_bars": 1.5})
    with pytest.raises(ValueError, match="trade_zscore"):
        WalkForwardParams(trade_zscore="kalman")
    with pytest.raises(ValueError, match="stop_z"):
        PARAMS.with_values({"stop_z": 1.0})
    assert PARAMS.with_values({"entry_z": 3}).entry_z == 3.0


def test_levels_reported_are_those_a_backtest_can_reach():
    assert level_numbers(LADDER) == [1]


def test_pair_columns_reach_the_backtest_sliced_per_leg():
    """Per-symbol matrices (here funding rates) reach ``backtest`` as the legs' columns: same trades, other PnL."""
    shifted = market(FIRST + WEEK)
    # Six hours later, the spikes' exit bars (96k + 25 and 96k + 49) close at 08:00 UTC, a funding settlement.
    m = Market(shifted.times_ms + 6 * 3_600_000, shifted.closes, shifted.turnover, shifted.symbols, shifted.bar_ms)
    funding = np.full(m.closes.shape, np.nan)
    funding[:, 1] = 0.01  # y pays (when long) 1% a settlement; x's NaN means the default rate
    with_funding = Market(m.times_ms, m.closes, m.turnover, m.symbols, m.bar_ms, {"funding": funding})
    schedule = periods(m, start_bar=FIRST, end_bar=FIRST + WEEK, every_bars=WEEK, params=PARAMS)
    plain = run_walkforward(m, schedule, [PARAMS], LADDER)[0][0]
    options = {"pair_columns": {"funding_rate_y": ("funding", "y"), "funding_rate_x": ("funding", "x")}}
    funded = run_walkforward(with_funding, schedule, [PARAMS], LADDER, backtest_options=options)[0][0]
    np.testing.assert_array_equal(plain.entry_bar, funded.entry_bar)
    # A trade whose exit bar closes on a settlement (00:00, 08:00, 16:00 UTC) pays or receives y's 1%.
    closes_on_settlement = ((m.times_ms[plain.exit_bar] + m.bar_ms) // 3_600_000) % 8 == 0
    assert closes_on_settlement.sum() >= 2
    changed = ~np.isclose(plain.ret, funded.ret, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(changed, closes_on_settlement)
    with pytest.raises(ValueError, match="column funding must be"):
        Market(m.times_ms, m.closes, m.turnover, m.symbols, m.bar_ms, {"funding": funding[:-1]})


@pytest.mark.parametrize("delay", [0, 1])
def test_trades_fill_at_the_open_after_the_signal_plus_slippage(delay):
    """With opens, highs and lows in the market, validation and trading fill like the evidence backtest and the
    replay: a decision on bar t fills at the open of bar t + 1 + delay, a buy paying open x (1 + s) and a sell
    getting open x (1 - s), s = fixed + factor x (high - low) / open of bar t + delay (``pairs.quant.fills``)."""
    plain = market(FIRST + WEEK)
    rng = np.random.default_rng(3)
    opens = plain.closes * np.exp(0.002 * rng.standard_normal(plain.closes.shape))  # not the previous close
    highs = np.maximum(opens, plain.closes) * (1 + 0.01 * rng.random(plain.closes.shape))
    lows = np.minimum(opens, plain.closes) * (1 - 0.01 * rng.random(plain.closes.shape))
    m = Market(plain.times_ms, plain.closes, plain.turnover, plain.symbols, plain.bar_ms,
               {"open": opens, "high": highs, "low": lows})
    params = replace(PARAMS, execution_delay_bars=delay, slippage=0.0003, slippage_factor=0.1)
    schedule = periods(m, start_bar=FIRST, end_bar=FIRST + WEEK, every_bars=WEEK, params=params)
    result = run_walkforward(m, schedule, [params], LADDER)[0][0]
    k, _ = _pair_rows(result, 1, 0)
    mine = np.flatnonzero(result.pair == k)
    assert len(mine) >= 2
    fills = result.fills
    for n in mine:
        fill, ref = result.entry_bar[n] + 1 + delay, result.entry_bar[n] + delay
        for leg, column, price, slip in (("y", result.y[k], fills.entry_price_y[n], fills.entry_slippage_y[n]),
                                         ("x", result.x[k], fills.entry_price_x[n], fills.entry_slippage_x[n])):
            assert price == pytest.approx(opens[fill, column], rel=1e-12), leg
            expected = 0.0003 + 0.1 * (highs[ref, column] - lows[ref, column]) / opens[ref, column]
            assert slip == pytest.approx(expected, rel=1e-12), leg
        assert fills.entry_fill_ms[n] == m.times_ms[fill]
        assert result.exit_ms[n] == fills.exit_fill_ms[n]
    # The slippage is charged on those prices (a buy at open x (1 + s), a sell at open x (1 - s)): the same trades
    # without slippage earn exactly the fills' slippage more.
    free = run_walkforward(m, schedule, [replace(params, slippage=0.0, slippage_factor=0.0)], LADDER)[0][0]
    np.testing.assert_array_equal(free.entry_bar, result.entry_bar)
    np.testing.assert_allclose((free.ret - result.ret) * (1 + np.abs(result.hedge_ratio)), fills.slippage,
                               rtol=1e-9)
