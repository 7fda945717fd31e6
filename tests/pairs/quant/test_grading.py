"""The level ladder's decisions (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairs.quant.grading import Decision, GradingParams, LevelRule, PairEvidence, TradeEvidence, grade

LADDER = [
    LevelRule(0, False, 0, 0.0, 0.0, 1.0, 1.0, 0.0, 1e9),
    LevelRule(1, False, 8, 0.5, 1.2, 0.15, 0.10, 5.0, 200.0),
    LevelRule(2, True, 10, 0.55, 1.3, 0.10, 0.10, 5.0, 150.0),
    LevelRule(3, True, 30, 0.55, 1.3, 0.08, 0.05, 5.0, 120.0),
]
PARAMS = GradingParams(hysteresis=0.2, max_consecutive_failures=3, live_shortfall_margin=0.3, min_live_trades=10)
NO_TRADES = TradeEvidence(0, None, None, None)


def evidence(backtest=NO_TRADES, live=NO_TRADES, qvalue=0.02, half_life=30.0, failures=0):
    return PairEvidence(backtest=backtest, live=live, qvalue=qvalue, half_life=half_life, consecutive_failures=failures)


GOOD_BACKTEST = TradeEvidence(12, 0.6, 1.5, 0.05)


def test_new_pair_enters_the_bottom_rung():
    assert grade(None, LADDER, evidence(), PARAMS) == Decision(0, "entered the ladder")


def test_validation_evidence_promotes_one_rung_only():
    decision = grade(0, LADDER, evidence(backtest=GOOD_BACKTEST, live=TradeEvidence(40, 0.7, 2.0, 0.02)), PARAMS)
    assert decision.level == 1
    assert "validation backtest" in decision.reason


def test_a_backtest_alone_never_reaches_a_live_level():
    decision = grade(1, LADDER, evidence(backtest=TradeEvidence(100, 0.8, 3.0, 0.01)), PARAMS)
    assert decision.level == 1


def test_paper_evidence_promotes_to_small_live():
    live = TradeEvidence(10, 0.6, 1.4, 0.05)
    assert grade(1, LADDER, evidence(backtest=GOOD_BACKTEST, live=live), PARAMS).level == 2


@pytest.mark.parametrize(
    ("field", "value", "promotes"),
    [("trades", 7, False), ("win_rate", 0.49, False), ("profit_factor", 1.19, False), ("max_drawdown", 0.16, False),
     ("trades", 8, True), ("win_rate", 0.5, True), ("profit_factor", 1.2, True), ("max_drawdown", 0.15, True)],
)
def test_each_promotion_threshold_is_inclusive(field, value, promotes):
    values = {"trades": 8, "win_rate": 0.5, "profit_factor": 1.2, "max_drawdown": 0.15} | {field: value}
    decision = grade(0, LADDER, evidence(backtest=TradeEvidence(**values)), PARAMS)
    assert (decision.level == 1) is promotes


def test_qvalue_and_half_life_gate_promotion():
    assert grade(0, LADDER, evidence(backtest=GOOD_BACKTEST, qvalue=0.11), PARAMS).level == 0
    assert grade(0, LADDER, evidence(backtest=GOOD_BACKTEST, half_life=4.0), PARAMS).level == 0
    assert grade(0, LADDER, evidence(backtest=GOOD_BACKTEST, half_life=math.inf), PARAMS).level == 0


def test_hysteresis_keeps_a_pair_slightly_below_its_level():
    # Profit factor 1.0 is below L1's 1.2 but above 1.2 * (1 - 0.2) = 0.96: it stays; 0.95 demotes.
    assert grade(1, LADDER, evidence(backtest=TradeEvidence(12, 0.6, 1.0, 0.05)), PARAMS) == Decision(1, "unchanged")
    decision = grade(1, LADDER, evidence(backtest=TradeEvidence(12, 0.6, 0.95, 0.05)), PARAMS)
    assert decision.level == 0
    assert "profit factor 0.95 < 0.96" in decision.reason


def test_broken_cointegration_drops_to_watch():
    live = TradeEvidence(40, 0.7, 2.0, 0.02)
    decision = grade(3, LADDER, evidence(backtest=GOOD_BACKTEST, live=live, failures=3), PARAMS)
    assert decision == Decision(0, "cointegration broken: 3 failed screenings in a row")


def test_a_pair_that_failed_its_last_screening_is_not_promoted():
    assert grade(0, LADDER, evidence(backtest=GOOD_BACKTEST, failures=1), PARAMS).level == 0


def test_live_shortfall_against_the_backtest_demotes():
    backtest = TradeEvidence(30, 0.65, 2.0, 0.05)
    # Live PF 1.35 meets L2 (1.3) but is below 70% of the backtest's 2.0 (1.4).
    live = TradeEvidence(12, 0.6, 1.35, 0.05)
    decision = grade(2, LADDER, evidence(backtest=backtest, live=live), PARAMS)
    assert decision.level == 1
    assert "live profit factor 1.35" in decision.reason


def test_live_shortfall_needs_enough_live_trades():
    backtest = TradeEvidence(30, 0.65, 2.0, 0.05)
    live = TradeEvidence(9, 0.6, 1.35, 0.05)
    assert grade(2, LADDER, evidence(backtest=backtest, live=live), PARAMS).level == 2


evidence_strategy = st.builds(
    TradeEvidence,
    st.integers(0, 100),
    st.one_of(st.none(), st.floats(0, 1)),
    st.one_of(st.none(), st.floats(0, 5)),
    st.one_of(st.none(), st.floats(0, 0.5)),
)


@given(
    current=st.sampled_from([None, 0, 1, 2, 3]),
    backtest=evidence_strategy,
    live=evidence_strategy,
    qvalue=st.floats(0, 1),
    half_life=st.floats(0.5, 500),
    failures=st.integers(0, 5),
)
def test_a_grading_moves_at_most_one_rung_up(current, backtest, live, qvalue, half_life, failures):
    decision = grade(current, LADDER, evidence(backtest, live, qvalue, half_life, failures), PARAMS)
    start = 0 if current is None else current
    assert decision.level in (0, 1, 2, 3)
    assert decision.level <= start + 1
    if decision.level < start - 1:
        assert decision.level == 0 and "cointegration broken" in decision.reason


def test_a_live_shortfall_holds_the_pair_down_instead_of_flapping():
    # Validation backtest good enough for level 1; paper trades far below it. Before, the shortfall demoted the pair
    # and the backtest promoted it back at the next grading, on the same evidence: L1, L0, L1, L0...
    backtest, live = TradeEvidence(12, 0.6, 2.0, 0.05), TradeEvidence(12, 0.5, 0.8, 0.05)
    levels, level = [], 1
    for _ in range(6):
        level = grade(level, LADDER, evidence(backtest=backtest, live=live), PARAMS).level
        levels.append(level)
    assert levels == [0, 0, 0, 0, 0, 0]
    # Once the live results catch up with the backtest, the pair climbs again.
    assert grade(0, LADDER, evidence(backtest=backtest, live=TradeEvidence(12, 0.6, 1.9, 0.05)), PARAMS).level == 1


def test_a_validation_window_without_a_trade_does_not_demote():
    # No entry signal in the window, or a leg left out of it for a gap: the pair's win rate and profit factor were
    # read as 0 and a paper pair was demoted ("win rate 0.00 < 0.40"), though trade counts never demote.
    assert grade(1, LADDER, evidence(backtest=NO_TRADES), PARAMS) == Decision(1, "unchanged")
    # Its own thresholds still hold it: a q-value beyond the margin demotes it.
    decision = grade(1, LADDER, evidence(backtest=NO_TRADES, qvalue=0.2), PARAMS)
    assert decision.level == 0 and "q-value" in decision.reason
    # A losing trade is evidence, and demotes.
    assert grade(1, LADDER, evidence(backtest=TradeEvidence(1, 0.0, 0.0, 0.01)), PARAMS).level == 0


def test_a_live_level_without_a_live_trade_is_demoted():
    # Live trades only accumulate: a pair on real money (moved there by hand) with none has no evidence at all.
    decision = grade(2, LADDER, evidence(backtest=GOOD_BACKTEST, live=NO_TRADES), PARAMS)
    assert decision.level == 1 and "win rate 0.00" in decision.reason
