"""The reporting API's figures against an independent computation from the stored rows, and against the dashboard:
trades closed on UTC day boundaries, a period given with an offset, two real accounts combined beside a paper one
(which must not count), daily marks. Run on SQLite and MariaDB alike."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from execution.models import ExchangeAccount, PairTrade
from risk.models import DailyPnlSnapshot
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    LevelFactory,
    PairFactory,
    PairTradeFactory,
)

pytestmark = pytest.mark.django_db

FINAL = (PairTrade.State.CLOSED, PairTrade.State.FAILED, PairTrade.State.UNWOUND)


@pytest.fixture
def book():
    """Three accounts (two real, one paper) and 60 finished trades around midnights of early January 2025."""
    level = LevelFactory(number=1)
    real_a = ExchangeAccountFactory(name="real-a", mode=ExchangeAccount.Mode.REAL, level=level,
                                    capital=Decimal("10000"))
    real_b = ExchangeAccountFactory(name="real-b", mode=ExchangeAccount.Mode.REAL, level=level,
                                    capital=Decimal("2500.5"))
    paper = ExchangeAccountFactory(name="paper", mode=ExchangeAccount.Mode.PAPER, level=level)
    pairs = [PairFactory(level=level) for _ in range(2)]
    rng = random.Random(7)
    midnight = datetime(2025, 1, 2, tzinfo=UTC)
    for n in range(60):
        account = (real_a, real_b, paper)[n % 3]
        # On, just before and just after midnights, and in between.
        closed = midnight + timedelta(days=rng.randint(0, 4)) + rng.choice(
            [timedelta(0), -timedelta(microseconds=1), timedelta(microseconds=1), timedelta(hours=rng.randint(1, 23))])
        pnl = Decimal(rng.randint(-90000, 90000)) / Decimal(1000) + Decimal("0.000000000001") * rng.randint(0, 9)
        PairTradeFactory(account=account, pair=rng.choice(pairs), state=rng.choice(FINAL),
                         opened_at=closed - timedelta(hours=rng.randint(1, 50)), closed_at=closed,
                         realised_pnl=pnl, fees=Decimal(rng.randint(0, 500)) / 100,
                         funding=Decimal(rng.randint(-300, 300)) / 100,
                         exit_reason=PairTrade.ExitReason.EXIT_SIGNAL)
    # A finished trade without a result is in none of the figures.
    PairTradeFactory(account=real_a, pair=pairs[0], state=PairTrade.State.CLOSED, opened_at=midnight,
                     closed_at=midnight + timedelta(hours=3), realised_pnl=None,
                     exit_reason=PairTrade.ExitReason.RECONCILED)
    for day, amount in ((date(2025, 1, 3), "-120.5"), (date(2025, 1, 4), "35")):
        DailyPnlSnapshotFactory(account=real_a, date=day, unrealised_pnl=Decimal(amount))
    return {"real": [real_a, real_b], "paper": paper}


def expected(accounts, start: datetime, end: datetime) -> dict:
    """The figures worked out from the stored trades and snapshots, without the project's selectors nor kpis."""
    rows = [t for t in PairTrade.objects.filter(account__in=accounts)
            if t.state in FINAL and t.realised_pnl is not None and start <= t.closed_at < end]
    pnls = [t.realised_pnl for t in rows]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    capital = sum((a.capital for a in accounts), Decimal(0))
    by_day: dict[date, Decimal] = {}
    for t in rows:
        day = t.closed_at.astimezone(UTC).date()
        by_day[day] = by_day.get(day, Decimal(0)) + t.realised_pnl
    marks: dict[date, Decimal] = {}
    for snapshot in DailyPnlSnapshot.objects.filter(account__in=accounts):
        day_end = datetime.combine(snapshot.date, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
        if snapshot.date >= start.astimezone(UTC).date() and day_end <= end and snapshot.unrealised_pnl:
            marks[snapshot.date] = marks.get(snapshot.date, Decimal(0)) + snapshot.unrealised_pnl
    equity, realised, peak, drawdown = [capital], Decimal(0), capital, Decimal(0)
    for day in sorted(set(by_day) | set(marks)):
        realised += by_day.get(day, Decimal(0))
        value = capital + realised + marks.get(day, Decimal(0))
        equity.append(value)
        peak = max(peak, value)
        drawdown = max(drawdown, (peak - value) / peak)
    return {
        "total_trades": len(rows), "wins": len(wins), "losses": len(losses),
        "win_rate": len(wins) / len(rows), "profit_factor": float(sum(wins) / -sum(losses)),
        "realised_pnl": sum(pnls, Decimal(0)), "fees": sum((t.fees for t in rows), Decimal(0)),
        "funding": sum((t.funding for t in rows), Decimal(0)), "total_return": float(sum(pnls) / capital),
        "max_drawdown": float(drawdown), "expectancy": float(sum(pnls) / len(rows)), "equity": equity,
    }


@pytest.fixture
def reporting_client(django_user_model):
    user = django_user_model.objects.create_user(username="powerbi", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="reporting"))
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize(("query", "start", "end"), [
    ({"mode": "real", "start": "2025-01-02", "end": "2025-01-05"},
     datetime(2025, 1, 2, tzinfo=UTC), datetime(2025, 1, 6, tzinfo=UTC)),
    ({"mode": "real", "start": "2025-01-03T01:30:00+02:00", "end": "2025-01-05T00:00:00Z"},
     datetime(2025, 1, 2, 23, 30, tzinfo=UTC), datetime(2025, 1, 5, tzinfo=UTC)),
    ({"account": "real-a", "start": "2025-01-01", "end": "2025-01-07"},
     datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 8, tzinfo=UTC)),
])
def test_performance_and_equity_equal_the_figures_of_the_stored_rows(book, reporting_client, query, start, end):
    accounts = [ExchangeAccount.objects.get(name="real-a")] if "account" in query else book["real"]
    want = expected(accounts, start, end)
    got = reporting_client.get("/api/v1/performance/", query).json()
    for name in ("total_trades", "wins", "losses"):
        assert got[name] == want[name], name
    for name in ("realised_pnl", "fees", "funding"):  # exact decimals, as strings
        assert isinstance(got[name], str) and Decimal(got[name]) == want[name], name
    for name in ("win_rate", "profit_factor", "total_return", "max_drawdown", "expectancy"):
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
    assert got["without_result"] == (1 if start <= datetime(2025, 1, 2, 3, tzinfo=UTC) < end else 0)
    curve = reporting_client.get("/api/v1/equity/", query).json()
    assert [p["equity"] for p in curve] == pytest.approx([float(v) for v in want["equity"]], rel=1e-12)
    assert max(p["drawdown"] for p in curve) == pytest.approx(want["max_drawdown"], rel=1e-9)


def test_the_dashboard_shows_the_figures_the_api_gives_for_the_same_scope(book, reporting_client, client,
                                                                           django_user_model):
    viewer = django_user_model.objects.create_user(username="quant", password="a-long-test-password", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    period = {"start": "2025-01-02", "end": "2025-01-05"}
    page = client.get("/", {"scope": "mreal", **period})
    assert page.status_code == 200
    summary = page.context["summary"]
    api = reporting_client.get("/api/v1/performance/", {"mode": "real", **period}).json()
    assert (summary.total_trades, summary.wins, summary.losses) == (api["total_trades"], api["wins"], api["losses"])
    assert summary.realised_pnl == Decimal(api["realised_pnl"])
    for name in ("win_rate", "profit_factor", "max_drawdown", "sharpe", "total_return"):
        assert getattr(summary, name) == pytest.approx(api[name], rel=1e-12), name
