"""The ladder: after each screening, every pair's evidence is weighed and the pair moves at most one rung.

Evidence comes from two floors below: the backtests in sample and on validation (``pairs.services.evidence``) and the
pair's own finished paper, demo and real trades (``execution.selectors.live_trade_results``). The decision itself
is ``pairs.quant.grading.grade``; the statistics are stored and the moves audited through the pairs app's services
(``pair_statistics_store``, ``pair_set_level``), in one transaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.db import transaction

from core.formatting import iso
from execution.selectors import live_trade_results
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Level, Pair, PairStatistics, StrategyConfig
from pairs.quant.grading import GradingParams, LevelRule, PairEvidence, TradeEvidence, grade
from pairs.quant.performance import max_drawdown, trade_metrics
from pairs.services.evidence import backtest_windows, finite, gradable_pairs, pair_statistics_store
from pairs.services.levels import pair_set_level

logger = logging.getLogger(__name__)


@dataclass
class GradedPair:
    pair: Pair
    previous_level: int | None
    level: int | None
    reason: str
    windows: dict[str, dict] = field(default_factory=dict)
    moved_by_ladder: bool = True  # False: its move was not made (a person moved or locked it while it was graded)


@dataclass
class StatisticsOutcome:
    graded: list[GradedPair]
    duration_seconds: float
    window_end: datetime | None

    def as_json(self) -> dict:
        def window(stats: dict | None) -> dict | None:
            if stats is None:
                return None
            return {k: stats.get(k) for k in ("trades", "win_rate", "profit_factor", "total_return", "max_drawdown",
                                               "sharpe")}

        return {
            "window_end": iso(self.window_end),
            "n_pairs": len(self.graded),
            "promoted": sum(1 for g in self.graded if _moved(g) > 0),
            "demoted": sum(1 for g in self.graded if _moved(g) < 0),
            "pairs": [
                {
                    "y": g.pair.y_instrument.symbol,
                    "x": g.pair.x_instrument.symbol,
                    "level": g.level,
                    "previous_level": g.previous_level,
                    "reason": g.reason,
                    "in_sample": window(g.windows.get(PairStatistics.Window.IN_SAMPLE)),
                    "validation": window(g.windows.get(PairStatistics.Window.VALIDATION)),
                    "live": window(g.windows.get(PairStatistics.Window.LIVE)),
                }
                for g in self.graded
            ],
        }


def _moved(graded: GradedPair) -> int:
    """+1 promoted, -1 demoted, 0 otherwise (entering the ladder at its bottom is neither, nor a person's move)."""
    if graded.previous_level is None or graded.level is None or not graded.moved_by_ladder:
        return 0
    return (graded.level > graded.previous_level) - (graded.level < graded.previous_level)


def live_statistics(pairs: list[Pair], *, end: datetime | None = None) -> dict[int, dict]:
    """Statistics of each pair's finished paper/demo/real trades (closed by ``end`` when given): returns on the
    gross entry notional."""
    timeframes = {pair.pk: pair.timeframe for pair in pairs}
    stats = {}
    for pair_id, results in live_trade_results(pair_ids=timeframes, closed_by=end).items():
        bar_ms = timeframe_ms(timeframes[pair_id])
        returns = np.array([r.return_on_notional for r in results])
        held = [(r.closed_at - r.opened_at).total_seconds() * 1000 / bar_ms if r.opened_at and r.closed_at
                else np.nan for r in results]
        metrics = trade_metrics(returns)
        stats[pair_id] = {
            "trades": metrics.trades, "win_rate": metrics.win_rate,
            "profit_factor": finite(metrics.profit_factor), "profit_factor_raw": metrics.profit_factor,
            "total_return": metrics.total, "mean_return": metrics.mean,
            "max_drawdown": max_drawdown(np.concatenate([[1.0], 1.0 + np.cumsum(returns)])),
            "sharpe": None, "sortino": None, "expectancy": metrics.expectancy,
            "avg_holding_bars": finite(np.nanmean(held)) if held else None,
        }
    return stats


def _evidence(stats: dict | None) -> TradeEvidence:
    if not stats:
        return TradeEvidence(0, None, None, None)
    return TradeEvidence(stats["trades"], stats.get("win_rate"), stats.get("profit_factor_raw"),
                         stats.get("max_drawdown"))


def _ladder() -> tuple[list[LevelRule], dict[int, Level]]:
    levels = list(Level.objects.all())
    rules = [
        LevelRule(level.number, level.requires_live_evidence, level.min_trades, level.min_win_rate,
                  level.min_profit_factor, level.max_drawdown, level.max_qvalue, level.min_half_life_bars,
                  level.max_half_life_bars)
        for level in levels
    ]
    return rules, {level.number: level for level in levels}


def pair_statistics_update(*, config: StrategyConfig, end: datetime | None = None) -> StatisticsOutcome:
    """Backtest every non-retired pair in sample and on validation, collect its live results, store the statistics and
    move it on the ladder (audited); locked pairs keep their level."""
    started = time.monotonic()
    pairs = gradable_pairs(config)
    if not pairs:
        return StatisticsOutcome([], time.monotonic() - started, None)
    backtests, window_end = backtest_windows(pairs, config, end)
    live = live_statistics(pairs, end=end)
    rules, levels = _ladder()
    params = GradingParams(hysteresis=config.grading_hysteresis,
                           max_consecutive_failures=config.max_consecutive_failures,
                           live_shortfall_margin=config.live_shortfall_margin, min_live_trades=config.min_live_trades)
    graded, moves = [], []
    for pair in pairs:
        windows = backtests[pair.pk]
        if pair.pk in live:
            windows[PairStatistics.Window.LIVE] = live[pair.pk]
        previous = pair.level.number if pair.level else None
        evidence = PairEvidence(
            backtest=_evidence(windows.get(PairStatistics.Window.VALIDATION)),
            live=_evidence(windows.get(PairStatistics.Window.LIVE)),
            qvalue=pair.qvalue, half_life=pair.half_life_bars, consecutive_failures=pair.consecutive_failures,
        )
        decision = grade(previous, rules, evidence, params) if rules else None
        level, reason, move = previous, "no levels defined", None
        if decision is not None:
            level, reason = decision.level, decision.reason
            if pair.level_locked:
                level, reason = previous, f"locked at L{previous} ({decision.reason})"
            elif decision.level != previous:
                move = levels[decision.level]
        graded.append(GradedPair(pair=pair, previous_level=previous, level=level, reason=reason, windows=windows))
        if move is not None:
            moves.append((graded[-1], move))
    # The evidence and the moves it justifies are written together, or not at all.
    with transaction.atomic():
        pair_statistics_store({g.pair: g.windows for g in graded})
        for entry, level in moves:
            after = pair_set_level(pair=entry.pair, level=level, reason=entry.reason,
                                   from_level_id=entry.pair.level_id)
            if after.level_id != level.pk:  # a person moved or locked it meanwhile: the report says what is
                entry.level, entry.moved_by_ladder = (after.level.number if after.level else None), False
                entry.reason = f"left where a person put it meanwhile ({entry.reason})"
    return StatisticsOutcome(graded, time.monotonic() - started, window_end)


