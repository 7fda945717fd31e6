"""The KPIs of the one metrics module against figures worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from pairs.quant.kpis import (
    DayTotals,
    TradeResult,
    account_kpis,
    daily_curve,
    daily_equity,
    daily_kpis,
    day_end,
    equity_curve,
    exposure,
    finite_or_none,
)

T0 = datetime(2021, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)

# Capital 1,000 over three days: +100 (held 12 h), -50 (held 24 h), a mark at the end of day 2 with -20
# unrealised, then +30 (held 6 h).
TRADES = [
    TradeResult(pnl=100.0, opened_at=T0, closed_at=T0 + 12 * H, fees=2.0, funding=-1.0),
    TradeResult(pnl=-50.0, opened_at=T0 + 6 * H, closed_at=T0 + 30 * H, fees=1.0, funding=0.5),
    TradeResult(pnl=30.0, opened_at=T0 + 48 * H, closed_at=T0 + 54 * H, fees=1.0, funding=0.0),
]
MARKS = [(T0 + 48 * H - timedelta(microseconds=1), -20.0)]


def _kpis(**overrides):
    arguments = {"capital": 1000.0, "trades": TRADES, "start": T0, "end": T0 + 72 * H, "marks": MARKS}
    arguments.update(overrides)
    return account_kpis(**arguments)


def test_trade_figures():
    k = _kpis()
    assert (k.trades, k.wins, k.losses) == (3, 2, 1)
    assert k.win_rate == pytest.approx(2 / 3)
    assert k.profit_factor == pytest.approx(130 / 50)
    assert k.net_pnl == pytest.approx(80)
    assert k.fees == pytest.approx(4)
    assert k.funding == pytest.approx(-0.5)
    assert k.expectancy == pytest.approx(80 / 3)
    assert k.average_win == pytest.approx(65)
    assert k.average_loss == pytest.approx(-50)
    assert k.total_return == pytest.approx(0.08)
    assert k.average_holding_hours == pytest.approx((12 + 24 + 6) / 3)


def test_drawdown_is_marked_to_market():
    # With marks, the first close (at 12 h, while the second trade is still open) is no point of the curve: its
    # realised equity leaves out the open trade's unrealised PnL. Curve 1000, 1050 (flat at 30 h), 1030 (the mark:
    # 1050 - 20), 1080 (flat at 54 h): the deepest fall is 1050 -> 1030.
    assert [v for _, v in equity_curve(capital=1000.0, trades=TRADES, marks=MARKS)] == [1000, 1050, 1030, 1080]
    assert _kpis().max_drawdown == pytest.approx(20 / 1050)
    # Without marks the realised equity after every close is all there is: 1000, 1100, 1050, 1080.
    assert [v for _, v in equity_curve(capital=1000.0, trades=TRADES)] == [1000, 1100, 1050, 1080]
    assert _kpis(marks=()).max_drawdown == pytest.approx(50 / 1100)


def test_a_paper_gain_of_an_open_trade_is_no_drawdown():
    # A mark of +100 while trade B is open, then trade A closes with +10 as B stays open: the realised 1010 would
    # look like a fall from 1100; it is not on the curve. B closes at +100 at 30 h: 1110.
    trades = [TradeResult(pnl=10.0, opened_at=T0, closed_at=T0 + 12 * H),
              TradeResult(pnl=100.0, opened_at=T0, closed_at=T0 + 30 * H)]
    curve = equity_curve(capital=1000.0, trades=trades, marks=[(T0 + 6 * H, 100.0)])
    assert [v for _, v in curve] == [1000, 1100, 1110]


def test_sharpe_and_sortino_on_daily_equity():
    # End-of-day equity 1000 (start), 1000 (day 1: no point, the trade still open), 1030 (the mark), 1080.
    assert daily_equity(equity_curve(capital=1000.0, trades=TRADES, marks=MARKS), T0.date(),
                        (T0 + 48 * H).date()) == [1000, 1000, 1030, 1080]
    returns = [0.0, 0.03, 1080 / 1030 - 1]
    mean = sum(returns) / 3
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    downside = 0.0
    k = _kpis()
    assert k.sharpe == pytest.approx(mean / std * math.sqrt(365))
    assert downside == 0.0 and k.sortino is None  # no losing day: no downside deviation
    # Without marks: 1000, 1100, 1050, 1080 at the days' ends.
    realised = _kpis(marks=())
    returns = [0.1, 1050 / 1100 - 1, 1080 / 1050 - 1]
    mean = sum(returns) / 3
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    downside = math.sqrt((1050 / 1100 - 1) ** 2 / 3)
    assert realised.sharpe == pytest.approx(mean / std * math.sqrt(365))
    assert realised.sortino == pytest.approx(mean / downside * math.sqrt(365))


def test_exposure_is_the_union_of_holding_intervals():
    # [0 h, 12 h] and [6 h, 30 h] overlap: 30 h, then [48 h, 54 h]: 36 h of 72.
    assert _kpis().exposure == pytest.approx(0.5)
    # A trade still open since 66 h adds its last 6 h.
    assert _kpis(open_since=[T0 + 66 * H]).exposure == pytest.approx(42 / 72)
    # Intervals are clipped to the period.
    assert exposure([(T0 - 10 * H, T0 + 6 * H)], T0, T0 + 12 * H) == pytest.approx(0.5)
    assert exposure([], T0, T0) is None


def test_no_trade_and_no_capital():
    k = account_kpis(capital=0.0, trades=[], start=T0, end=T0 + 24 * H)
    assert k.trades == 0 and k.win_rate is None and k.profit_factor is None and k.expectancy is None
    assert k.total_return is None and k.max_drawdown is None and k.sharpe is None
    assert k.exposure == 0.0


def test_profit_factor_without_a_loss_is_unbounded():
    k = _kpis(trades=TRADES[:1], marks=())
    assert k.profit_factor == math.inf
    assert finite_or_none(k.profit_factor) is None
    assert finite_or_none(2.5) == 2.5


# The same three days summed per day, as the database hands them to ``daily_kpis``.
DAYS = [
    DayTotals(day=T0.date(), trades=1, wins=1, gross_profit=100.0, pnl=100.0, fees=2.0, funding=-1.0,
              held_hours=12.0, held_trades=1),
    DayTotals(day=(T0 + 24 * H).date(), trades=1, losses=1, gross_loss=-50.0, pnl=-50.0, fees=1.0, funding=0.5,
              held_hours=24.0, held_trades=1),
    DayTotals(day=(T0 + 48 * H).date(), trades=1, wins=1, gross_profit=30.0, pnl=30.0, fees=1.0, held_hours=6.0,
              held_trades=1),
]
DAY_MARKS = {(T0 + 24 * H).date(): -20.0}


def test_daily_kpis_trade_figures_equal_the_per_trade_ones():
    daily = daily_kpis(capital=1000.0, days=DAYS, start=T0, end=T0 + 72 * H, marks=DAY_MARKS, exposure_hours=36.0)
    per_trade = _kpis()
    for name in ("trades", "wins", "losses", "win_rate", "profit_factor", "gross_profit", "gross_loss", "net_pnl",
                 "fees", "funding", "expectancy", "average_win", "average_loss", "total_return",
                 "average_holding_hours", "exposure"):
        assert getattr(daily, name) == pytest.approx(getattr(per_trade, name)), name


def test_daily_curve_drawdown_sharpe_and_sortino():
    # End of each day: 1000 + 100 = 1100; 1000 + 50 - 20 (the mark) = 1030; 1000 + 80 = 1080.
    curve = daily_curve(capital=1000.0, days=DAYS, marks=DAY_MARKS)
    assert [v for _, v in curve] == [1000, 1100, 1030, 1080]
    assert curve[1][0] == day_end(T0.date()) == T0 + 24 * H - timedelta(microseconds=1)
    k = daily_kpis(capital=1000.0, days=DAYS, start=T0, end=T0 + 72 * H, marks=DAY_MARKS, exposure_hours=36.0)
    assert k.max_drawdown == pytest.approx(70 / 1100)
    returns = [0.1, 1030 / 1100 - 1, 1080 / 1030 - 1]
    mean = sum(returns) / 3
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    downside = math.sqrt((1030 / 1100 - 1) ** 2 / 3)
    assert k.sharpe == pytest.approx(mean / std * math.sqrt(365))
    assert k.sortino == pytest.approx(mean / downside * math.sqrt(365))
    # A day with only a mark is a point too; a quiet day is none.
    marked = daily_curve(capital=1000.0, days=DAYS[:1], marks={(T0 + 72 * H).date(): 5.0})
    assert [v for _, v in marked] == [1000, 1100, 1105]


def test_daily_kpis_without_trades():
    k = daily_kpis(capital=0.0, days=[], start=T0, end=T0 + 24 * H)
    assert k.trades == 0 and k.win_rate is None and k.profit_factor is None and k.expectancy is None
    assert k.total_return is None and k.max_drawdown is None and k.sharpe is None and k.exposure == 0.0
    assert daily_kpis(capital=1000.0, days=DAYS[:1], start=T0, end=T0 + 24 * H).profit_factor == math.inf
