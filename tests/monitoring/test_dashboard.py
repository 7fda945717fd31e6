"""What the dashboard pages draw besides the KPIs: today's PnL against the limit as the guard measured it, the Celery
queues, the per-level KPI table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from execution.models import BotHeartbeat, PairTrade
from monitoring import dashboard
from monitoring.dashboard import guard_today
from risk.models import AccountGuardState, RiskLimit
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    LevelFactory,
    PairTradeFactory,
    RiskLimitFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)


@pytest.fixture
def viewer_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="viewer", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    return client


def _day(account, start: str, end: str, date=None):
    return DailyPnlSnapshotFactory(account=account, date=date or timezone.now().date(),
                                   starting_equity=Decimal(start), ending_equity=Decimal(end),
                                   peak_equity=max(Decimal(start), Decimal(end)))


def test_today_is_the_guards_equity_against_the_strictest_daily_limit():
    limited = ExchangeAccountFactory(name="limited", capital=Decimal("10000"))
    by_pct = ExchangeAccountFactory(name="by-pct", capital=Decimal("5000"))
    unmeasured = ExchangeAccountFactory(name="unmeasured")
    RiskLimit.objects.create(account=None, daily_loss_limit_pct=0.03)
    RiskLimitFactory(account=limited, daily_loss_limit=Decimal("200"))
    _day(limited, "10000", "9850")
    _day(limited, "10000", "5000", date=timezone.now().date() - timedelta(days=1))  # yesterday: not today's
    _day(by_pct, "5000", "5100")
    now = timezone.now()
    AccountGuardState.objects.create(account=limited, state="reducing", checked_at=now)

    rows = {row.account.name: row for row in guard_today([limited, by_pct, unmeasured])}
    # An amount of its own is what the guard applies (the system-wide 3% would be 300 here).
    assert (rows["limited"].pnl, rows["limited"].limit, rows["limited"].state) == (Decimal("-150"), Decimal("200"),
                                                                                 "reducing")
    assert rows["limited"].used_pct == pytest.approx(75) and rows["limited"].checked_at == now
    # The system-wide 3% of the day's start: 150; a gain uses none of it.
    assert (rows["by-pct"].pnl, rows["by-pct"].limit, rows["by-pct"].used_pct) == (Decimal("100"), Decimal("150"), 0)
    assert rows["unmeasured"].pnl is None and rows["unmeasured"].used_pct is None
    assert rows["unmeasured"].state == "active" and rows["unmeasured"].checked_at is None


def test_today_shows_the_percentage_limit_when_it_is_the_nearer_one():
    # The guard halts on whichever limit a loss crosses first: 3 % of 10,000 (300) before an amount of 1,000.
    account = ExchangeAccountFactory(name="wide-amount", capital=Decimal("10000"))
    RiskLimit.objects.create(account=None, daily_loss_limit_pct=0.03)
    RiskLimitFactory(account=account, daily_loss_limit=Decimal("1000"))
    _day(account, "10000", "9850")
    row = guard_today([account])[0]
    assert row.limit == Decimal("300") and row.used_pct == pytest.approx(50)


def test_system_page_shows_queues_and_today_per_account(viewer_client, monkeypatch):
    account = ExchangeAccountFactory(name="sys-acc", capital=Decimal("1000"))
    RiskLimitFactory(account=account, daily_loss_limit=Decimal("40"))
    _day(account, "1000", "990")
    RiskLimit.objects.create(account=None, queue_max_length=100)
    page = viewer_client.get("/system/")
    assert page.status_code == 200
    # The test broker (SQLite) answers: every watched queue is listed.
    assert 'id="queues"' in page.text and "<td>risk</td>" in page.text
    today = page.context["today"]
    assert [(t.account.name, t.pnl, t.limit) for t in today] == [("sys-acc", Decimal("-10"), Decimal("40"))]
    assert "25%" in page.text

    monkeypatch.setattr(dashboard, "celery_queue_lengths", lambda app: {"default": 150, "risk": 3})
    queues = dashboard.queue_lengths()
    assert queues["readable"] and queues["limit"] == 100
    assert [(q["name"], q["over"]) for q in queues["rows"]] == [("default", True), ("risk", False)]
    monkeypatch.setattr(dashboard, "celery_queue_lengths", lambda app: {})
    assert "could not be asked" in viewer_client.get("/system/").text


def test_dashboard_has_kpis_per_level_and_mode(viewer_client):
    one, two = LevelFactory(number=1), LevelFactory(number=2)
    first = ExchangeAccountFactory(name="l1-a", level=one, capital=Decimal("1000"))
    ExchangeAccountFactory(name="l1-b", level=one, capital=Decimal("1000"))
    second = ExchangeAccountFactory(name="l2-a", level=two, capital=Decimal("500"))
    for account, pnl in ((first, "100"), (second, "-25")):
        PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0, closed_at=T0 + timedelta(hours=1),
                         realised_pnl=Decimal(pnl))
    rows = viewer_client.get("/").context["level_kpis"]
    assert [(r.label, r.total_trades) for r in rows] == [
        ("combined paper level 1 accounts: l1-a, l1-b", 1), ("combined paper level 2 accounts: l2-a", 1)]
    assert rows[0].total_return == pytest.approx(100 / 2000) and rows[1].total_return == pytest.approx(-25 / 500)


def test_a_percentage_limit_before_the_guard_measured_the_day_is_shown_not_none(viewer_client):
    # At midnight, before the guard's first cycle of the day, there is no start-of-day equity to turn 3 % into an
    # amount; the page said "none" as if no limit covered the account.
    account = ExchangeAccountFactory(name="new-day", capital=Decimal("10000"))
    RiskLimit.objects.create(account=None, daily_loss_limit_pct=0.03)
    row = guard_today([account])[0]
    assert (row.pnl, row.limit, row.limit_pct) == (None, None, 0.03)
    page = viewer_client.get("/system/").text
    assert "-3.00% of the day's start" in page
    assert "-3.00% of the day's start" in viewer_client.get(f"/?scope=a{account.pk}").text
    _day(account, "10000", "9900")
    assert guard_today([account])[0].limit_pct is None  # measured: the amount, 300, is shown


def test_a_disabled_accounts_old_heartbeat_is_not_flagged_stale(viewer_client):
    # A finished replay's account is disabled: its bot never beats again, which is no alarm (/health/ and the guard
    # leave it out); the dashboard and /system/ flagged it "stale" in red.
    old = timezone.now() - timedelta(hours=1)
    live = ExchangeAccountFactory(name="live-bot")
    replay = ExchangeAccountFactory(name="replay-bot", enabled=False)
    for account in (live, replay):
        BotHeartbeat.objects.create(account=account, beat_at=old)
    rows = {row["beat"].account.name: row for row in dashboard.heartbeats()}
    assert rows["live-bot"]["stale"] and not rows["live-bot"]["disabled"]
    assert not rows["replay-bot"]["stale"] and rows["replay-bot"]["disabled"]
    page = viewer_client.get("/system/").text
    assert page.count("badge critical\">stale") == 1 and "account disabled" in page


def test_a_daily_loss_limit_of_zero_is_shown_as_the_limit_the_guard_enforces_not_none(viewer_client):
    # A limit of 0 halts at the first loss of the day (monitoring.guard.limits); the page read it as no limit at all.
    measured = ExchangeAccountFactory(name="zero-amount", capital=Decimal("10000"))
    RiskLimitFactory(account=measured, daily_loss_limit=Decimal(0))
    _day(measured, "10000", "10000")
    unmeasured = ExchangeAccountFactory(name="zero-pct", capital=Decimal("10000"))
    RiskLimitFactory(account=unmeasured, daily_loss_limit=None, daily_loss_limit_pct=0.0)
    page = viewer_client.get("/system/").text
    rows = {name: page[page.index(f"<td>{name} "):].split("</tr>")[0] for name in ("zero-amount", "zero-pct")}
    assert ">-0.00<" in rows["zero-amount"] and "none" not in rows["zero-amount"]
    assert "-0.00% of the day's start" in rows["zero-pct"]
    for account, text in ((measured, "/ -0.00<"), (unmeasured, "/ -0.00% of the day's start")):
        assert text in viewer_client.get(f"/?scope=a{account.pk}").text
