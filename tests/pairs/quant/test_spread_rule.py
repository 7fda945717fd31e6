"""The spread rule state machine and its z-scores: hand-written z paths, live vs vectorised, no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.regression.linear_model import OLS
from statsmodels.tools import add_constant

from pairs.quant.spread_rule import (
    ACTION_LABELS,
    Action,
    PairState,
    RuleParams,
    RuleState,
    fixed_zscore,
    max_holding_bars,
    rolling_zscore,
    rolling_zscore_pairs,
    run_rule,
    step,
    step_one,
)

NAN = math.nan
H, EL, ES, EX, ST, MH = "hold", "enter_long", "enter_short", "exit", "stop", "max_holding"


def labels(z, params=None, **kwargs) -> list[str]:
    """Actions of one pair over a z path, as labels."""
    actions, _ = run_rule(np.asarray(z, dtype=float)[:, None], params or RuleParams(), **kwargs)
    return [ACTION_LABELS[a] for a in actions[:, 0]]


# --- parameters and labels ------------------------------------------------------------------------------------


def test_defaults():
    params = RuleParams()
    assert (params.entry_z, params.exit_z, params.stop_z) == (2.0, 0.0, 4.0)
    assert params.max_holding_half_lives == 3.0
    assert params.cooldown_bars == 24


def test_labels_match_signal_actions():
    assert [a.label for a in Action] == [
        "hold", "enter_long", "enter_short", "exit", "stop", "max_holding", "end_of_data"
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"entry_z": 0.0},
        {"entry_z": 2.0, "stop_z": 2.0},
        {"exit_z": 2.0},
        {"exit_z": math.inf},
        {"max_holding_half_lives": 0.0},
        {"cooldown_bars": -1},
        {"cooldown_bars": 1.5},
    ],
)
def test_invalid_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        RuleParams(**kwargs)


def test_max_holding_bars_from_half_lives():
    params = RuleParams(max_holding_half_lives=3)
    assert max_holding_bars(10.0, params) == 30.0
    assert max_holding_bars(2.4, params) == 8.0  # ceil(7.2)
    assert max_holding_bars(0.1, params) == 1.0  # at least one bar
    np.testing.assert_array_equal(
        max_holding_bars(np.array([5.0, np.nan, np.inf, -1.0, 0.0]), params), [15.0, np.inf, np.inf, np.inf, np.inf]
    )


# --- the rule on hand-written z paths -------------------------------------------------------------------------


def test_long_entry_and_exit_at_the_mean():
    assert labels([0.0, -1.9, -2.0, -3.0, -0.5, 0.0, 0.0]) == [H, H, EL, H, H, EX, H]


def test_short_entry_and_exit_at_the_mean():
    assert labels([0.0, 2.5, 1.0, 0.0, -0.1]) == [H, ES, H, EX, H]


def test_exit_threshold_other_than_the_mean():
    params = RuleParams(exit_z=0.5)
    # long exits at z >= -0.5, short at z <= 0.5
    assert labels([-2.2, -0.6, -0.5, 2.1, 0.6, 0.5], params) == [EL, H, EX, ES, H, EX]


def test_stops_in_the_direction_against_the_position():
    assert labels([-2.5, -3.9, -4.0]) == [EL, H, ST]
    assert labels([2.5, 3.9, 4.0]) == [ES, H, ST]
    # A move through the other side is an exit, never a stop.
    assert labels([-2.5, 4.5]) == [EL, EX]


def test_max_holding_closes_after_exactly_the_limit():
    # Entered on bar 1: bars_held is 1, 2, 3 on bars 2, 3, 4; the limit of 3 closes on bar 4.
    z = [0.0, -2.5, -2.5, -2.5, -2.5, -2.5, -2.5]
    assert labels(z, max_holding_bars=3) == [H, EL, H, H, MH, EL, H]


def test_stop_takes_precedence_over_max_holding_and_starts_the_cooldown():
    params = RuleParams(cooldown_bars=2)
    assert labels([-2.5, -3.0, -4.5, -3.0, -3.0, -3.0], params, max_holding_bars=2) == [EL, H, ST, H, H, EL]


def test_exit_takes_precedence_over_max_holding():
    assert labels([-2.5, 0.0], max_holding_bars=1) == [EL, EX]


@pytest.mark.parametrize("cooldown", [0, 1, 3, 24])
def test_cooldown_after_a_stop_blocks_entries_for_exactly_cooldown_bars(cooldown):
    params = RuleParams(cooldown_bars=cooldown)
    z = [-2.5, -4.5] + [-3.0] * (cooldown + 2)
    expected = [EL, ST] + [H] * cooldown + [EL, H]
    assert labels(z, params) == expected


def test_exits_start_no_cooldown():
    assert labels([-2.5, 0.0, -2.5], RuleParams(cooldown_bars=5)) == [EL, EX, EL]


def test_no_exit_and_entry_on_the_same_bar():
    # The short exits on the bar that would be a long entry; the long comes one bar later.
    assert labels([2.5, -2.5, -2.5]) == [ES, EX, EL]


def test_nan_z_holds_and_never_enters():
    assert labels([NAN, NAN, -2.5, NAN, NAN, 0.0]) == [H, H, EL, H, H, EX]


def test_nan_z_still_counts_bars_for_max_holding_and_cooldown():
    assert labels([-2.5, NAN, NAN], max_holding_bars=2) == [EL, H, MH]
    assert labels([-2.5, -4.5, NAN, -3.0], RuleParams(cooldown_bars=1)) == [EL, ST, H, EL]


def test_no_entry_at_or_beyond_the_stop():
    # |z| at the stop or beyond is no entry, on either side; back inside (entry_z, stop_z) the entry is taken,
    # and no cooldown was started by the refused bars.
    assert labels([-5.0, -4.0, 4.0, 10.95, -3.9]) == [H, H, H, H, EL]
    assert labels([3.99, 0.0]) == [ES, EX]
    # Without a stop (inf) every |z| >= entry_z still enters.
    assert labels([-50.0], RuleParams(stop_z=math.inf)) == [EL]


def test_entries_on_last_bar_can_be_blocked():
    assert labels([0.0, -2.5], entries_on_last_bar=False) == [H, H]


def test_state_after_entry_and_stop():
    params = RuleParams(cooldown_bars=5)
    state = RuleState.flat(2)
    actions, state = step(state, np.array([-2.5, 2.5]), params, bar_index=7)
    assert actions.tolist() == [Action.ENTER_LONG, Action.ENTER_SHORT]
    assert state.position.tolist() == [1, -1]
    assert state.entry_bar.tolist() == [7, 7]
    assert state.bars_held.tolist() == [0, 0]
    actions, state = step(state, np.array([-4.0, 3.0]), params, bar_index=8)
    assert actions.tolist() == [Action.STOP, Action.HOLD]
    assert state.position.tolist() == [0, -1]
    assert state.entry_bar.tolist() == [-1, 7]
    assert state.bars_held.tolist() == [0, 1]
    assert state.cooldown.tolist() == [5, 0]


def test_step_one_returns_labels_and_a_persistable_state():
    state = PairState()
    action, state = step_one(state, -2.1, RuleParams(), bar_index=100)
    assert action is Action.ENTER_LONG and action.label == "enter_long"
    assert state == PairState(position=1, entry_bar=100, bars_held=0, cooldown=0)
    assert PairState.from_dict(state.to_dict()) == state
    action, state = step_one(state, None, RuleParams(), bar_index=101)
    assert action is Action.HOLD
    assert state.bars_held == 1


# --- live (scalar) and vectorised agree -----------------------------------------------------------------------

z_values = st.one_of(st.floats(-6, 6, allow_nan=False), st.just(NAN))
params_strategy = st.builds(
    RuleParams,
    entry_z=st.sampled_from([1.0, 1.5, 2.0]),
    exit_z=st.sampled_from([-0.5, 0.0, 0.5]),
    stop_z=st.sampled_from([3.0, 4.0, math.inf]),
    cooldown_bars=st.integers(0, 6),
)
holding = st.one_of(st.integers(1, 8).map(float), st.just(math.inf))


@settings(max_examples=150, deadline=None)
@given(z=st.lists(st.lists(z_values, min_size=3, max_size=3), min_size=1, max_size=60), params=params_strategy,
       limits=st.lists(holding, min_size=3, max_size=3))
def test_scalar_step_and_vectorised_rule_agree(z, params, limits):
    z = np.array(z)
    limits = np.array(limits)
    actions, final = run_rule(z, params, max_holding_bars=limits, first_bar_index=10)
    for pair in range(z.shape[1]):
        state = PairState()
        for t in range(z.shape[0]):
            action, state = step_one(state, z[t, pair], params, max_holding_bars=limits[pair], bar_index=10 + t)
            assert action == actions[t, pair]
        assert state == PairState(int(final.position[pair]), int(final.entry_bar[pair]),
                                  int(final.bars_held[pair]), int(final.cooldown[pair]))


@settings(max_examples=100, deadline=None)
@given(z=st.lists(z_values, min_size=1, max_size=80), params=params_strategy, limit=holding)
def test_positions_alternate_entries_and_closes(z, params, limit):
    actions, final = run_rule(np.array(z)[:, None], params, max_holding_bars=limit)
    position = 0
    for action in actions[:, 0]:
        if action in (Action.ENTER_LONG, Action.ENTER_SHORT):
            assert position == 0
            position = 1 if action == Action.ENTER_LONG else -1
        elif action != Action.HOLD:
            assert position != 0
            position = 0
    assert position == final.position[0]


# --- z-scores -------------------------------------------------------------------------------------------------


def cointegrated_logs(seed: int, n_bars: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_x = 3.0 + np.cumsum(rng.normal(0, 0.01, (n_bars, n_pairs)), axis=0)
    log_y = 1.0 + rng.uniform(-1.5, 1.5, n_pairs) * log_x + rng.normal(0, 0.01, (n_bars, n_pairs))
    return log_y, log_x


def test_rolling_zscore_matches_ols_on_the_previous_window():
    log_y, log_x = cointegrated_logs(1, 120, 3)
    window = 40
    result = rolling_zscore(log_y, log_x, window)
    assert np.isnan(result.zscore[:window]).all()
    for t in (40, 41, 77, 119):
        for pair in range(3):
            fit = OLS(log_y[t - window : t, pair], add_constant(log_x[t - window : t, pair])).fit()
            intercept, beta = fit.params
            residuals = fit.resid
            expected = (log_y[t, pair] - intercept - beta * log_x[t, pair] - residuals.mean()) / residuals.std(ddof=1)
            assert result.hedge_ratio[t, pair] == pytest.approx(beta, rel=1e-9)
            assert result.intercept[t, pair] == pytest.approx(intercept, rel=1e-8, abs=1e-9)
            assert result.spread_std[t, pair] == pytest.approx(residuals.std(ddof=1), rel=1e-8)
            assert result.zscore[t, pair] == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_rolling_zscore_of_a_single_series_and_of_index_pairs():
    log_y, log_x = cointegrated_logs(2, 80, 1)
    single = rolling_zscore(log_y[:, 0], log_x[:, 0], 30)
    np.testing.assert_allclose(single.zscore, rolling_zscore(log_y, log_x, 30).zscore[:, 0], equal_nan=True)
    matrix = np.column_stack([log_x[:, 0], log_y[:, 0]])
    by_index = rolling_zscore_pairs(matrix, np.array([1, 0]), np.array([0, 1]), 30)
    np.testing.assert_array_equal(by_index.zscore[:, 0], single.zscore)
    np.testing.assert_array_equal(by_index.zscore[:, 1], rolling_zscore(log_x[:, 0], log_y[:, 0], 30).zscore)


def test_rolling_zscore_short_history_and_perfect_fit_give_nan():
    log_y, log_x = cointegrated_logs(3, 20, 1)
    assert np.isnan(rolling_zscore(log_y, log_x, 20).zscore).all()
    log_x = np.log(np.linspace(10, 20, 50))
    perfect = rolling_zscore(0.5 + 2.0 * log_x, log_x, 10)
    assert np.isnan(perfect.zscore).all()
    assert np.isnan(rolling_zscore(np.full(30, 1.0), np.full(30, 2.0), 10).zscore).all()


def test_rolling_zscore_rejects_non_finite_prices():
    log_y, log_x = cointegrated_logs(4, 50, 1)
    log_y[10, 0] = np.nan
    with pytest.raises(ValueError):
        rolling_zscore(log_y, log_x, 20)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.integers(5, 40), cut=st.integers(0, 99),
       scale=st.floats(0.01, 10.0))
def test_rolling_zscore_uses_no_later_bar(seed, window, cut, scale):
    log_y, log_x = cointegrated_logs(seed, 100, 2)
    baseline = rolling_zscore(log_y, log_x, window)
    rng = np.random.default_rng(seed + 1)
    log_y[cut + 1 :] += rng.normal(0, scale, log_y[cut + 1 :].shape)
    log_x[cut + 1 :] *= 1.0 + rng.uniform(0, scale, log_x[cut + 1 :].shape)
    perturbed = rolling_zscore(log_y, log_x, window)
    for name in ("zscore", "hedge_ratio", "intercept", "spread_std"):
        np.testing.assert_array_equal(getattr(perturbed, name)[: cut + 1], getattr(baseline, name)[: cut + 1])


def test_fixed_zscore_by_hand():
    log_y = np.array([[1.0, 2.0], [1.5, 2.5]])
    log_x = np.array([[0.5, 1.0], [1.0, 0.0]])
    z = fixed_zscore(log_y, log_x, np.array([2.0, -1.0]), np.array([0.1, 0.2]), np.array([0.0, 0.5]),
                     np.array([0.5, 2.0]))
    # pair 0: (1 - 0.1 - 1)/0.5 = -0.2, (1.5 - 0.1 - 2)/0.5 = -1.2;
    # pair 1: (2 - 0.2 + 1 - 0.5)/2 = 1.15, (2.5 - 0.2 - 0 - 0.5)/2 = 0.9
    np.testing.assert_allclose(z, [[-0.2, 1.15], [-1.2, 0.9]])
    assert np.isnan(fixed_zscore(log_y, log_x, 1.0, 0.0, 0.0, 0.0)).all()
