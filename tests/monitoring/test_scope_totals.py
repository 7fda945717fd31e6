"""The performance figures read from the daily trade totals equal those aggregated from the trades (and the
per-trade figures of ``pairs.quant.kpis.account_kpis``) for every kind of scope, also after trades close, change
and are deleted. On the database, no mock."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from execution.models import ExchangeAccount, PairTrade
from monitoring.selectors import (
    performance_scope,
    scope_closed_trades,
    scope_day_rows,
    scope_equity,
    scope_exposure_hours,
    scope_performance,
)
from pairs.quant.kpis import TradeResult, account_kpis
from tests.factories import DailyPnlSnapshotFactory, ExchangeAccountFactory, LevelFactory, PairFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
# SQLite sums decimals as doubles: the two paths may differ in the last digits there; MariaDB is exact.
EXACT = connection.vendor != "sqlite"


@pytest.fixture
def world():
    level2 = LevelFactory(number=2)
    a = ExchangeAccountFactory(name="a", capital=Decimal("1000"))
    b = ExchangeAccountFactory(name="b", capital=Decimal("500"), level=level2)
    real = ExchangeAccountFactory(name="r", capital=Decimal("2000"), mode=ExchangeAccount.Mode.REAL)
    pair = PairFactory()
    spec = [  # account, opened h, closed h, pnl, fees, funding, state
        (a, 0, 12, "100.125", "2", "-1", "closed"), (a, 6, 30, "-50.5", "1", "0.5", "closed"),
        (a, 23, 25, "7.25", "0.5", "0", "unwound"), (a, 48, 54, "30", "1", "0", "closed"),
        (a, 70, 80, "999", "1", "0", "closed"),  # closes after the 72 h periods: out of them (also of exposure)
        (a, None, 60, "-3", "0.25", "0", "failed"),  # no opening time: no holding time, no exposure
        (b, 10, 40, "-20", "0.75", "-0.5", "closed"), (b, 41, 47, "15", "0.5", "0", "closed"),
        (real, 3, 9, "40", "1", "0", "closed"),
    ]
    for account, opened, closed, pnl, fees, funding, state in spec:
        PairTradeFactory(account=account, pair=pair if account is a and opened == 6 else PairFactory(), state=state,
                         opened_at=None if opened is None else T0 + opened * H, closed_at=T0 + closed * H,
                         realised_pnl=Decimal(pnl), fees=Decimal(fees), funding=Decimal(funding))
    PairTradeFactory(account=a, state=PairTrade.State.FAILED, opened_at=T0, closed_at=T0 + H)  # no result
    active = PairTradeFactory(account=b, state=PairTrade.State.OPEN, opened_at=T0 + 66 * H)
    DailyPnlSnapshotFactory(account=a, date=(T0 + 24 * H).date(), unrealised_pnl=Decimal("-20"))
    DailyPnlSnapshotFactory(account=b, date=(T0 + 48 * H).date(), unrealised_pnl=Decimal("5"))
    return {"a": a, "b": b, "real": real, "pair": pair, "active": active}


def scopes(world):
    a, pair = world["a"], world["pair"]
    return {
        "account, whole days": performance_scope(account=a, start=T0, end=T0 + 72 * H),
        "account, partial days": performance_scope(account=a, start=T0 + 5 * H, end=T0 + 71 * H),
        "account, within a day": performance_scope(account=a, start=T0 + 1 * H, end=T0 + 23 * H),
        "account, default period": performance_scope(account=a),
        "account, five days": performance_scope(account=a, start=T0, end=T0 + 120 * H),
        "account with an open trade": performance_scope(account=world["b"], start=T0 + 30 * H, end=T0 + 100 * H),
        "mode combined": performance_scope(mode="paper", start=T0 + 2 * H, end=T0 + 70 * H),
        "level": performance_scope(mode="paper", level=2, start=T0, end=T0 + 96 * H),
        "real account": performance_scope(account=world["real"], start=T0, end=T0 + 48 * H),
        "pair (direct)": performance_scope(account=a, pair=pair, start=T0, end=T0 + 72 * H),
    }


def assert_same(left, right, what):
    if isinstance(left, Decimal) or isinstance(right, Decimal):
        assert (left == right) if EXACT else abs(left - right) < Decimal("1e-9"), what
    elif isinstance(left, float) and isinstance(right, float):
        assert left == pytest.approx(right, rel=1e-12, abs=1e-12) or (math.isinf(left) and left == right), what
    else:
        assert left == right, what


def assert_rollup_equals_direct(world):
    for name, scope in scopes(world).items():
        rolled, direct = scope_performance(scope), scope_performance(scope, rollup=False)
        for field in fields(rolled):
            assert_same(getattr(rolled, field.name), getattr(direct, field.name), f"{name}: {field.name}")
        assert scope_exposure_hours(scope) == pytest.approx(scope_exposure_hours(scope, rollup=False), abs=1e-9)
        assert [(r["day"], r["trades"]) for r in scope_day_rows(scope)] == \
            [(r["day"], r["trades"]) for r in scope_day_rows(scope, rollup=False)], name
        curve, direct_curve = scope_equity(scope), scope_equity(scope, rollup=False)
        assert [p.at for p in curve] == [p.at for p in direct_curve], name
        assert [p.equity for p in curve] == pytest.approx([p.equity for p in direct_curve], rel=1e-12), name
        assert_equals_per_trade_figures(scope, rolled, name)


def assert_equals_per_trade_figures(scope, summary, name):
    """The trade figures and the exposure of ``account_kpis`` on the raw trades (drawdown, Sharpe and Sortino are
    measured on another curve there: per trade, not per day)."""
    trades = [TradeResult(pnl=float(t.realised_pnl), closed_at=t.closed_at, opened_at=t.opened_at, fees=float(t.fees),
                          funding=float(t.funding)) for t in scope_closed_trades(scope)]
    open_since = list(PairTrade.objects.filter(account__in=scope.accounts, state__in=PairTrade.ACTIVE_STATES,
                                               opened_at__lt=scope.end)
                      .filter(**({"pair": scope.pair} if scope.pair else {})).values_list("opened_at", flat=True))
    reference = account_kpis(capital=float(summary.capital), trades=trades, start=scope.start, end=scope.end,
                             open_since=open_since)
    assert (summary.total_trades, summary.wins, summary.losses) == (reference.trades, reference.wins,
                                                                    reference.losses), name
    for figure in ("win_rate", "profit_factor", "total_return", "expectancy", "average_win", "average_loss",
                   "average_holding_hours", "exposure"):
        expected = getattr(reference, figure)
        assert getattr(summary, figure) == (pytest.approx(expected) if expected is not None else None), \
            f"{name}: {figure}"


def test_rollup_figures_equal_the_direct_ones_for_every_scope(world):
    assert scope_performance(scopes(world)["account, whole days"]).total_trades == 5
    assert_rollup_equals_direct(world)


def test_and_after_trades_close_change_and_are_deleted(world):
    a, b = world["a"], world["b"]
    # The bot closes the open trade (one UPDATE, as set_state writes it) inside the periods.
    PairTrade.objects.filter(pk=world["active"].pk).update(
        state=PairTrade.State.CLOSED, closed_at=T0 + 69 * H, realised_pnl=Decimal("-12.5"), fees=Decimal("1"))
    assert_rollup_equals_direct(world)
    # A trade's figures change and it moves to another day; another account's trade moves to account a.
    trade = PairTrade.objects.get(account=a, opened_at=T0 + 48 * H)
    trade.realised_pnl, trade.fees, trade.closed_at = Decimal("-8"), Decimal("3"), T0 + 47 * H
    trade.save()
    moved = PairTrade.objects.get(account=b, opened_at=T0 + 41 * H)
    moved.account = a
    moved.save()
    assert_rollup_equals_direct(world)
    # A trade is deleted, one opens and one closes after the end of some periods.
    PairTrade.objects.get(account=a, opened_at=T0 + 23 * H).delete()
    PairTradeFactory(account=a, state=PairTrade.State.OPEN, opened_at=T0 + 20 * H)
    PairTradeFactory(account=a, state=PairTrade.State.CLOSED, opened_at=T0 + 50 * H, closed_at=T0 + 90 * H,
                     realised_pnl=Decimal("1"))
    assert_rollup_equals_direct(world)
