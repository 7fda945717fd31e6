"""Parity of the replay and the walk-forward (issue #17): on the same settings and candles, the walk-forward engine's
trading step (``pairs.quant.walkforward.trade``, rolling z-scores) and the replay (signals -> bot -> paper exchange)
make the same trades: the same signal and fill times, sides, hedge ratios, exit reasons and fill prices.

What is compared is the trading of one given pair. The replay's *selection* (``screening_run`` on the database, the
grading on the backtest evidence of ``pairs.services.evidence``) and the walk-forward's formation and validation
are different protocols (README, "Walk-forward evaluation"), so the pair is set by hand on both sides: in the
database for the replay (run without reselection), as a one-direction pool for the engine.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pairs.models import Instrument, Pair
from pairs.quant.walkforward import Formation, Period, bars_between, trade
from pairs.services.walkforward import FUNDING_COLUMNS, load_market, walkforward_params
from replay.report import replay_trades
from replay.run import replay_run
from tests.replay.replay_world import START, import_market, parsed, wipe_replay
from tests.replay.test_parity import END, EXIT_REASONS, assert_legs_filled_like, fixed_pair

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def walkforward_trades(config, pair: Pair, delay: int) -> list[dict]:
    """The engine's trading step on ``pair`` over the replayed bars [START, END], as the walkforward command runs
    it (the command's market loader and funding columns, the configuration as a walk-forward point)."""
    params = walkforward_params(config, execution_delay_bars=delay)
    assert params.trade_zscore == "rolling"
    instruments = [pair.y_instrument, pair.x_instrument]
    history = params.zscore_window_bars * HOUR
    market = load_market(config=config, instruments=instruments, start=pd.Timestamp(START - history),
                         end=pd.Timestamp(END))
    first, stop = bars_between(market, int(START.timestamp() * 1000), int(END.timestamp() * 1000))
    assert first == params.zscore_window_bars and stop == len(market.times_ms)
    one = np.array([1.0])
    pool = Formation(universe=np.array([0, 1]), y=np.array([0]), x=np.array([1]), hedge_ratio=one * np.nan,
                     intercept=one * np.nan, spread_mean=one * np.nan, spread_std=one * np.nan,
                     half_life=np.array([pair.half_life_bars]), qvalue=one * 0)
    result = trade(market, Period(0, 0, first, stop), pool, np.array([1]), params,
                   {"pair_columns": FUNDING_COLUMNS})
    records = result.fills.records()
    for record, entry_bar in zip(records, result.entry_bar, strict=True):
        record["signal_ms"] = int(market.times_ms[entry_bar] + market.bar_ms)
    return records


def moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def assert_replay_matches_walkforward(config, delay: int) -> int:
    pair = Pair.objects.get()
    replayed = [parsed(t) for t in replay_trades(account=replay_run(
        start=START, end=END, config=config, reselect_every=None, execution_delay_bars=delay).account)]
    closed = [t for t in replayed if t["closed_at"] is not None]
    assert len(closed) >= 3
    walked = walkforward_trades(config, pair, delay)
    # The engine closes a position still open on the last bar (end_of_data); the replay leaves it open.
    assert len(closed) <= len(walked) <= len(closed) + 1
    assert len(replayed) == len(walked)
    for trade_, reference in zip(closed, walked, strict=False):
        assert trade_["signal_at"] == moment(reference["signal_ms"])
        assert trade_["side"] == f"{reference['side']}_spread"
        assert trade_["exit_reason"] == EXIT_REASONS[reference["exit_reason"]]
        assert trade_["hedge_ratio"] == pytest.approx(reference["hedge_ratio"], rel=1e-9)
        assert trade_["opened_at"] == trade_["signal_at"]
        assert_legs_filled_like(trade_, reference)
        # The replay dates a trade's close, like its open, at the decision (its bar's close); the legs fill
        # ``delay`` bars later.
        assert trade_["closed_at"] == moment(reference["exit_fill_ms"]) - delay * HOUR
    return len(closed)


@pytest.mark.parametrize("delay", [0, 1])
def test_replay_and_walkforward_make_the_same_trades(shared_candles_dir, delay):
    config = import_market(shared_candles_dir)
    assert config.slippage_factor > 0  # the variable slippage part is compared too, not only the fixed one
    wipe_replay()
    fixed_pair()
    assert Instrument.objects.filter(symbol__in=["NEOUSDT", "OMGUSDT"]).count() == 2
    assert assert_replay_matches_walkforward(config, delay) >= 3
