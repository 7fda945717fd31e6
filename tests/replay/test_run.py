"""The replay run: the walk-forward never looks ahead, the account and the range are checked, the JSON is right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db.models import F

from execution.models import Fill
from pairs.models import Candle, CointegrationRun, Level, PairStatistics
from replay.report import replay_summary, replay_trades
from replay.run import ReplayError, replay_run
from tests.factories import ExchangeAccountFactory
from tests.replay.replay_world import START, import_market, wipe_replay

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def test_walk_forward_replay_never_looks_ahead(shared_candles_dir):
    config = import_market(shared_candles_dir)
    end = START + timedelta(days=7, hours=12)
    result = replay_run(start=START, end=end, config=config)
    first = replay_trades(account=result.account)
    assert len(first) >= 3

    # Selection at each step read only bars up to the step's last closed bar: window_end is that bar (its clock is
    # one bar later), and the grading windows end there too.
    runs = list(CointegrationRun.objects.filter(pk__in=result.selection_runs).order_by("pk"))
    assert [r.window_end for r in runs] == [START, START + timedelta(days=7)]
    stats = PairStatistics.objects.exclude(window=PairStatistics.Window.LIVE)
    assert stats.exists() and all(s.window_end <= START + timedelta(days=7) for s in stats)
    # Every fill is priced at the close of the bar that had just closed at its clock (plus slippage), never later.
    slip = Decimal(str(config.slippage))
    for fill in Fill.objects.select_related("order__instrument"):
        close = Candle.objects.get(instrument=fill.order.instrument, open_time=fill.filled_at - HOUR).close
        expected = close * (1 + slip) if fill.order.side == "buy" else close * (1 - slip)
        assert abs(fill.price - expected) < Decimal("1e-9"), fill

    # The replay account now has trades: it is not reused. Nor are pairs selected on the data a replay would replay.
    with pytest.raises(ReplayError, match=r"account 'replay' already has \d+ trade\(s\)"):
        replay_run(start=START, end=end, config=config, reselect_every=None)
    other = ExchangeAccountFactory(name="other", mode="paper", level=Level.objects.get(number=1))
    with pytest.raises(ReplayError, match=r"the database already holds 1 pair\(s\): the replay selects its pairs"):
        replay_run(start=START, end=end, config=config, account=other)
    with pytest.raises(ReplayError, match=r"1 pair\(s\) have signals at or after 2021-03-29T00:00:00Z"):
        replay_run(start=START, end=end, config=config, account=other, reselect_every=None)

    # Change every candle after T and replay again: whatever was decided before T is decided the same way.
    cut = START + timedelta(days=3, hours=6)
    assert any(t["closed_at"] and t["closed_at"] <= iso(cut) for t in first)
    assert any(t["opened_at"] > iso(cut) for t in first)
    wipe_replay()
    Candle.objects.filter(instrument__symbol="NEOUSDT", open_time__gt=cut).update(
        open=F("open") * Decimal("1.37"), high=F("high") * Decimal("1.37"), low=F("low") * Decimal("1.37"),
        close=F("close") * Decimal("1.37"),
    )  # fmt: skip
    second = replay_trades(account=replay_run(start=START, end=end, config=config).account)

    def before_cut(trades, field):
        return [t for t in trades if t[field] and t[field] <= iso(cut)]

    assert before_cut(second, "closed_at") == before_cut(first, "closed_at")
    opened = before_cut(first, "opened_at")
    assert [(t["y"], t["x"], t["side"], t["opened_at"], open_legs(t)) for t in before_cut(second, "opened_at")] == [
        (t["y"], t["x"], t["side"], t["opened_at"], open_legs(t)) for t in opened
    ]
    assert second != first, "the changed candles should change what happens after T"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def open_legs(trade: dict) -> list[dict]:
    return [leg for leg in trade["legs"] if leg["action"] == "open"]


def test_an_enabled_or_live_account_is_handled_before_anything_runs(shared_candles_dir):
    config = import_market(shared_candles_dir)
    level = Level.objects.get(number=1)
    real = ExchangeAccountFactory(name="real-one", mode="real", level=level)
    with pytest.raises(ReplayError, match=r"account 'real-one' is a real account: a replay trades on paper only"):
        replay_run(start=START, end=START + 2 * HOUR, config=config, account=real)

    mine = ExchangeAccountFactory(name="mine", mode="paper", level=level, enabled=True)
    result = replay_run(start=START, end=START + 2 * HOUR, config=config, account=mine, reselect_every=None)
    mine.refresh_from_db()
    assert not mine.enabled  # the live beat must not tick it between the replay's ticks
    assert result.bars == 3 and result.tick_statuses == {"ok": 3}
    assert [e for _, e in result.equity] == [mine.capital] * 3


def test_summary_figures():
    day = datetime(2021, 1, 1, tzinfo=UTC)
    trades = [{"pnl": "30"}, {"pnl": "-10"}, {"pnl": None}, {"pnl": "5"}]
    equity = [(day + HOUR, Decimal("1010")), (day + 2 * HOUR, Decimal("990")), (day + 25 * HOUR, Decimal("1025"))]
    summary = replay_summary(trades=trades, start_equity=Decimal("1000"), equity=equity)
    assert summary["total_trades"] == 3
    assert summary["win_rate"] == pytest.approx(2 / 3)
    assert summary["profit_factor"] == pytest.approx(3.5)
    assert summary["total_return"] == pytest.approx(0.025)
    assert summary["max_drawdown"] == pytest.approx(990 / 1010 - 1)
    # Daily closes 1000 (start), 990 (Jan 1), 1025 (Jan 2).
    returns = np.array([990 / 1000 - 1, 1025 / 990 - 1])
    assert summary["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1) * np.sqrt(365))
    assert (summary["start_equity"], summary["end_equity"]) == ("1000", "1025")
    no_loss = replay_summary(trades=[{"pnl": "1"}], start_equity=Decimal("1000"), equity=[])
    assert no_loss["profit_factor"] is None and no_loss["sharpe"] is None and no_loss["max_drawdown"] == 0.0
