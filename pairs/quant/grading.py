"""The level ladder's decisions, as a pure function of a pair's evidence and the ladder's thresholds.

A pair moves at most one rung per grading, so capital follows evidence step by step:

- **Promote** to the next level when the evidence for that level meets all its thresholds: at least
  ``min_trades`` trades, win rate >= ``min_win_rate``, profit factor >= ``min_profit_factor``, max drawdown <=
  ``max_drawdown``, and the pair's latest q-value <= ``max_qvalue`` and half-life within the level's range.
  The evidence is the validation backtest (the bars after the formation window, traded as the bots trade them:
  the rolling z-score and hedge ratio of the live signals), or, for a level
  that ``requires_live_evidence``, the pair's own paper and live trades: a backtest alone never brings a pair to
  real money.
- **Demote** one level when the current level's thresholds fail by more than the hysteresis margin (profit
  factor below ``min_profit_factor * (1 - h)``, win rate below ``min_win_rate * (1 - h)``, drawdown above
  ``max_drawdown * (1 + h)``, q-value above ``max_qvalue * (1 + h)``, half-life outside the range widened by
  ``h``). Trade counts don't demote: a validation window without a trade has no statistic to fail (a live level
  without a live trade does). The gap between the promotion and the demotion bars is what keeps a pair from
  flapping between two levels on noise.
- **Demote to level 0** when cointegration broke: ``consecutive_failures`` screening runs failed in a row.
- **Demote** one level when live results fall short of the backtest: with at least ``min_live_trades``
  live/paper trades, live profit factor below ``(1 - live_shortfall_margin)`` x the validation backtest's, or
  live win rate more than ``live_shortfall_margin`` x the backtest's below it.
- **Retire** (no level) when the pair was retired (delisted leg, stale data): handled by the caller, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LevelRule:
    number: int
    requires_live_evidence: bool
    min_trades: int
    min_win_rate: float
    min_profit_factor: float
    max_drawdown: float
    max_qvalue: float
    min_half_life: float
    max_half_life: float


@dataclass(frozen=True)
class TradeEvidence:
    trades: int
    win_rate: float | None
    profit_factor: float | None
    max_drawdown: float | None


@dataclass(frozen=True)
class PairEvidence:
    backtest: TradeEvidence  # validation: the bars after the formation window, traded as the bots trade
    live: TradeEvidence  # the pair's paper and live trades
    qvalue: float | None
    half_life: float | None
    consecutive_failures: int


@dataclass(frozen=True)
class GradingParams:
    hysteresis: float = 0.2
    max_consecutive_failures: int = 3
    live_shortfall_margin: float = 0.3
    min_live_trades: int = 10


@dataclass(frozen=True)
class Decision:
    level: int
    reason: str


def _value(x: float | None, missing: float) -> float:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _meets(rule: LevelRule, evidence: TradeEvidence | None, pair: PairEvidence, slack: float, count_trades: bool
           ) -> str:
    """'' when the thresholds hold (relaxed by ``slack``), else the first reason they don't (``evidence`` None: the
    pair's own thresholds only, q-value and half-life)."""
    failure = "" if evidence is None else _trades_meet(rule, evidence, slack, count_trades)
    if failure:
        return failure
    qvalue = _value(pair.qvalue, 1.0)
    if qvalue > rule.max_qvalue * (1 + slack):
        return f"q-value {qvalue:.3f} > {rule.max_qvalue * (1 + slack):.3f}"
    half_life = _value(pair.half_life, math.inf)
    if not rule.min_half_life * (1 - slack) <= half_life <= rule.max_half_life * (1 + slack):
        return f"half-life {half_life:.1f} bars outside [{rule.min_half_life:g}, {rule.max_half_life:g}]"
    return ""


def _trades_meet(rule: LevelRule, evidence: TradeEvidence, slack: float, count_trades: bool) -> str:
    if count_trades and evidence.trades < rule.min_trades:
        return f"{evidence.trades} trades < {rule.min_trades}"
    win_rate = _value(evidence.win_rate, 0.0)
    if win_rate < rule.min_win_rate * (1 - slack):
        return f"win rate {win_rate:.2f} < {rule.min_win_rate * (1 - slack):.2f}"
    profit_factor = _value(evidence.profit_factor, 0.0)
    if profit_factor < rule.min_profit_factor * (1 - slack):
        return f"profit factor {profit_factor:.2f} < {rule.min_profit_factor * (1 - slack):.2f}"
    drawdown = _value(evidence.max_drawdown, 0.0)
    if drawdown > rule.max_drawdown * (1 + slack):
        return f"max drawdown {drawdown:.3f} > {rule.max_drawdown * (1 + slack):.3f}"
    return ""


def grade(current: int | None, ladder: list[LevelRule], evidence: PairEvidence, params: GradingParams) -> Decision:
    """The level a pair should have after this grading, and why (``current`` None: not on the ladder yet)."""
    rules = sorted(ladder, key=lambda r: r.number)
    numbers = [r.number for r in rules]
    bottom = numbers[0]
    level = bottom if current is None or current not in numbers else current
    index = numbers.index(level)
    if evidence.consecutive_failures >= params.max_consecutive_failures and level != bottom:
        return Decision(bottom, f"cointegration broken: {evidence.consecutive_failures} failed screenings in a row")
    if level != bottom:
        rule = rules[index]
        source = evidence.live if rule.requires_live_evidence else evidence.backtest
        # The validation window slides with every screening: one without a trade (no signal, or a leg left out of it
        # for a gap) has no win rate, profit factor or drawdown to fail, and trade counts don't demote. Live trades
        # only accumulate, so a live level without any still fails: real money is never held on no evidence.
        unweighed = not rule.requires_live_evidence and source.trades == 0
        failure = _meets(rule, None if unweighed else source, evidence, params.hysteresis, count_trades=False)
        if failure:
            return Decision(numbers[index - 1], f"demoted: below L{level} thresholds ({failure})")
        shortfall = _live_shortfall(evidence, params)
        if shortfall:
            return Decision(numbers[index - 1], f"demoted: {shortfall}")
    # A pair whose live results fall short of its backtest is not promoted on that backtest: otherwise the
    # shortfall demotes it and the backtest promotes it back, grading after grading, on the same evidence.
    if index + 1 < len(rules) and evidence.consecutive_failures == 0 and not _live_shortfall(evidence, params):
        target = rules[index + 1]
        source = evidence.live if target.requires_live_evidence else evidence.backtest
        if not _meets(target, source, evidence, 0.0, count_trades=True):
            kind = "live/paper" if target.requires_live_evidence else "validation backtest"
            return Decision(target.number, f"promoted: {kind} evidence meets L{target.number} thresholds")
    return Decision(level, "unchanged" if current is not None else "entered the ladder")


def _live_shortfall(evidence: PairEvidence, params: GradingParams) -> str:
    live, backtest = evidence.live, evidence.backtest
    if live.trades < params.min_live_trades or backtest.trades == 0:
        return ""
    margin = params.live_shortfall_margin
    live_pf, backtest_pf = _value(live.profit_factor, 0.0), _value(backtest.profit_factor, 0.0)
    if math.isfinite(backtest_pf) and live_pf < (1 - margin) * backtest_pf:
        return f"live profit factor {live_pf:.2f} < {1 - margin:.0%} of the backtest's {backtest_pf:.2f}"
    live_wr, backtest_wr = _value(live.win_rate, 0.0), _value(backtest.win_rate, 0.0)
    if live_wr < (1 - margin) * backtest_wr:
        return f"live win rate {live_wr:.2f} < {1 - margin:.0%} of the backtest's {backtest_wr:.2f}"
    return ""
