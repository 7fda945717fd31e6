"""The performance summary aggregated in SQL against the per-trade figures of the metrics module, on the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from execution.models import PairTrade
from monitoring.selectors import performance_scope, scope_day_rows, scope_exposure_hours, scope_performance
from pairs.quant.kpis import TradeResult, account_kpis
from tests.factories import DailyPnlSnapshotFactory, ExchangeAccountFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _closed(account, opened_h, closed_h, pnl, fees="0", funding="0", state=PairTrade.State.CLOSED):
    return PairTradeFactory(account=account, state=state, opened_at=T0 + opened_h * H, closed_at=T0 + closed_h * H,
                            realised_pnl=Decimal(pnl), fees=Decimal(fees), funding=Decimal(funding))


@pytest.fixture
def account():
    account = ExchangeAccountFactory(capital=Decimal("1000"))
    _closed(account, 0, 12, "100", "2", "-1")
    _closed(account, 6, 30, "-50", "1", "0.5")
    _closed(account, 48, 54, "30", "1", state=PairTrade.State.UNWOUND)
    # Not in the figures: a failed trade without a result, one closed after the period.
    PairTradeFactory(account=account, state=PairTrade.State.FAILED, opened_at=T0, closed_at=T0 + H)
    _closed(account, 70, 80, "999")
    return account


def test_sql_day_totals_give_the_per_trade_figures(account):
    scope = performance_scope(account=account, start=T0, end=T0 + 72 * H)
    rows = scope_day_rows(scope)
    assert [(r["day"], r["trades"], r["pnl"]) for r in rows] == [
        (T0.date(), 1, Decimal("100")), ((T0 + 24 * H).date(), 1, Decimal("-50")), ((T0 + 48 * H).date(), 1,
                                                                                     Decimal("30"))]
    summary = scope_performance(scope)
    reference = account_kpis(capital=1000.0, start=T0, end=T0 + 72 * H, trades=[
        TradeResult(pnl=100.0, opened_at=T0, closed_at=T0 + 12 * H, fees=2.0, funding=-1.0),
        TradeResult(pnl=-50.0, opened_at=T0 + 6 * H, closed_at=T0 + 30 * H, fees=1.0, funding=0.5),
        TradeResult(pnl=30.0, opened_at=T0 + 48 * H, closed_at=T0 + 54 * H, fees=1.0),
    ])
    assert (summary.total_trades, summary.wins, summary.losses) == (3, 2, 1)
    assert (summary.realised_pnl, summary.fees, summary.funding) == (Decimal("80"), Decimal("4"), Decimal("-0.5"))
    for name in ("win_rate", "profit_factor", "total_return", "expectancy", "average_win", "average_loss",
                 "average_holding_hours", "exposure", "max_drawdown"):
        assert getattr(summary, name) == pytest.approx(getattr(reference, name)), name
    assert summary.exposure == pytest.approx(36 / 72)


def test_exposure_counts_overlaps_once_and_open_trades_to_the_end(account):
    scope = performance_scope(account=account, start=T0, end=T0 + 72 * H)
    assert scope_exposure_hours(scope) == pytest.approx(36)
    # A trade open since 66 h adds its last 6 h; one inside [48 h, 54 h] adds nothing; one opened before the period
    # counts from its start.
    PairTradeFactory(account=account, state=PairTrade.State.OPEN, opened_at=T0 + 66 * H)
    _closed(account, 49, 50, "1")
    assert scope_exposure_hours(scope) == pytest.approx(42)
    later = performance_scope(account=account, start=T0 + 10 * H, end=T0 + 72 * H)
    assert scope_exposure_hours(later) == pytest.approx(20 + 6 + 6)
    assert scope_performance(later).exposure == pytest.approx(32 / 62)


def test_marks_move_the_daily_curve_and_the_drawdown(account):
    DailyPnlSnapshotFactory(account=account, date=(T0 + 24 * H).date(), unrealised_pnl=Decimal("-20"))
    summary = scope_performance(performance_scope(account=account, start=T0, end=T0 + 72 * H))
    # End of day 1100, 1030 (1050 and the mark -20), 1080.
    assert summary.max_drawdown == pytest.approx(70 / 1100)


def test_a_scope_without_accounts_has_no_figures():
    summary = scope_performance(performance_scope(level=100))
    assert summary.accounts == () and summary.total_trades == 0 and summary.exposure in (None, 0.0)


def test_the_period_ends_at_the_market_clock_on_the_demos_stored_clock(settings):
    """On `make demo`'s stored-data clock (2021 here), the period, the open trade's exposure and the monthly table
    end where that clock stands, not at the machine's date years later."""
    from core.models import StoredDataClock

    moment = datetime(2021, 7, 13, 11, tzinfo=UTC)
    settings.STATARB_MARKET_CLOCK = "stored"
    StoredDataClock.objects.create(pk=1, moment=moment, start=moment - timedelta(days=7), end=moment,
                                   bar=timedelta(hours=1), wall_seconds=10.0)
    account = ExchangeAccountFactory(capital=Decimal("1000"))
    PairTradeFactory(account=account, state=PairTrade.State.OPEN, opened_at=moment - timedelta(hours=10))
    scope = performance_scope(account=account)
    assert scope.end == moment and scope.start == moment - timedelta(hours=10)
    assert scope_exposure_hours(scope) == pytest.approx(10.0)
