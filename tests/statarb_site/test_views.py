"""The staff dashboard, the health probe and the staff-only API schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings

from execution.models import BotHeartbeat, ExchangeAccount, PairTrade
from pairs.models import Level, Pair
from risk.models import GuardEvent
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    GuardEventFactory,
    HaltFactory,
    InstrumentFactory,
    PairFactory,
    PairTradeFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, 8, tzinfo=UTC)


def test_dashboard_redirects_anonymous_users_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.url == "/accounts/login/?next=/"


def test_dashboard_refuses_a_user_without_a_role(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="nobody", password="a-long-test-password",
                                                             is_staff=True))
    assert client.get("/").status_code == 403


def test_empty_dashboard(staff_client):
    response = staff_client.get("/")
    assert response.status_code == 200
    html = response.text
    assert 'id="kpis"' in html
    assert "No active halt." in html
    assert "No open position." in html
    assert "No closed trade yet." in html
    assert "No bot has reported yet." in html
    assert "No guard event." in html
    # Levels come from the data migration even with no pair.
    assert "<tr><td>L0</td><td>watch</td><td class=\"num\">0</td><td>no</td></tr>" in html


@pytest.fixture
def dashboard_data():
    levels = {level.number: level for level in Level.objects.all()}
    btc = InstrumentFactory(symbol="BTCUSDT", base="BTC")
    eth = InstrumentFactory(symbol="ETHUSDT", base="ETH")
    sol = InstrumentFactory(symbol="SOLUSDT", base="SOL")
    avax = InstrumentFactory(symbol="AVAXUSDT", base="AVAX")
    btc_eth = PairFactory(y_instrument=btc, x_instrument=eth, level=levels[1])
    sol_avax = PairFactory(y_instrument=sol, x_instrument=avax, level=levels[1])
    PairFactory(y_instrument=eth, x_instrument=btc, level=levels[2])
    PairFactory(y_instrument=avax, x_instrument=sol, level=levels[2], status=Pair.Status.SUSPENDED)

    account = ExchangeAccountFactory(name="bybit-live-main", mode=ExchangeAccount.Mode.REAL, capital=Decimal("10000"))
    PairTradeFactory(
        account=account, pair=btc_eth, state=PairTrade.State.OPEN, entry_zscore=-2.345, opened_at=T0,
    )
    PairTradeFactory(
        account=account, pair=sol_avax, side=PairTrade.Side.SHORT_SPREAD, state=PairTrade.State.CLOSED,
        opened_at=T0, closed_at=T0 + timedelta(hours=1), exit_reason=PairTrade.ExitReason.EXIT_SIGNAL,
        realised_pnl=Decimal("100"), fees=Decimal("1.25"), funding=Decimal("0.5"),
    )
    PairTradeFactory(
        account=account, pair=btc_eth, state=PairTrade.State.CLOSED, opened_at=T0,
        closed_at=T0 + timedelta(hours=2), exit_reason=PairTrade.ExitReason.STOP,
        realised_pnl=Decimal("-50"), fees=Decimal("2"), funding=Decimal("-1"),
    )
    HaltFactory(account=None, reason="exchange maintenance window", flatten=True)
    HaltFactory(account=account, reason="already cleared halt", cleared_at=T0)
    GuardEventFactory(
        account=account, kind="stale_candles", severity=GuardEvent.Severity.CRITICAL,
        message="no new BTCUSDT candle for 3 bars",
    )
    BotHeartbeat.objects.create(
        account=account, beat_at=datetime(2021, 3, 1, 12, 34, 56, tzinfo=UTC), status="tick ok", last_tick_ms=12.5,
        open_trades=1,
    )
    DailyPnlSnapshotFactory(
        account=account, date=T0.date(), starting_equity=Decimal("10000"), ending_equity=Decimal("10050"),
        peak_equity=Decimal("10100"), realised_pnl=Decimal("50"),
    )
    return account


def test_dashboard_shows_kpis_from_closed_trades(staff_client, dashboard_data):
    response = staff_client.get("/")
    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary.total_trades == 2
    assert summary.win_rate == pytest.approx(0.5)
    assert summary.profit_factor == pytest.approx(2.0)
    html = response.text
    assert '<div class="label">Closed trades</div><div class="value">2</div>' in html
    assert '<div class="label">Win rate</div><div class="value">50.0%</div>' in html
    assert '<div class="label">Profit factor</div><div class="value">2.00</div>' in html
    assert '<div class="value pos">50.00</div>' in html  # realised PnL 100 - 50
    assert '<div class="label">Return on capital</div><div class="value">0.50%</div>' in html
    # The drawdown is measured on the end-of-day equity: both trades close on 1 March (+100, then -50), whose end
    # is 10050, above the capital: no drawdown (the intraday 10100 is no point of the daily curve).
    assert 'Max drawdown</div><div class="value">0.00%</div>' in html
    assert '<div class="label">Fees / funding</div><div class="value">3.25 / -0.50</div>' in html


def test_dashboard_shows_levels_trades_halts_events_and_bots(staff_client, dashboard_data):
    html = staff_client.get("/").text

    # Active pairs per level: two at L1, one active (and one suspended) at L2.
    assert '<tr><td>L1</td><td>paper</td><td class="num">2</td><td>no</td></tr>' in html
    assert '<tr><td>L2</td><td>small live</td><td class="num">1</td><td>yes</td></tr>' in html
    assert '<tr><td>L3</td><td>full live</td><td class="num">0</td><td>yes</td></tr>' in html

    open_section = html[html.index('id="open-positions"') : html.index('id="halts"')]
    assert '<span class="badge real">real</span>' in open_section
    assert "BTCUSDT / ETHUSDT" in open_section
    assert "SOLUSDT / AVAXUSDT" not in open_section

    closed_section = html[html.index('id="closed-trades"') : html.index('id="daily-pnl"')]
    assert "SOLUSDT/AVAXUSDT" in closed_section
    assert "Short spread (sell y, buy x)" in closed_section
    assert '<td class="num pos">100.0000</td>' in closed_section
    assert '<td class="num neg">-50.0000</td>' in closed_section
    assert "exit_signal" in closed_section and "stop" in closed_section
    # Newest close first.
    assert closed_section.index("-50.0000") < closed_section.index("100.0000")

    halts = html[html.index('id="halts"') : html.index('id="bots"')]
    assert "<td>all accounts</td>" in halts
    assert "exchange maintenance window" in halts
    assert "already cleared halt" not in halts

    events = html[html.index('id="guard-events"') :]
    assert "stale_candles" in events
    assert '<span class="badge critical">critical</span>' in events
    assert "no new BTCUSDT candle for 3 bars" in events

    bots = html[html.index('id="bots"') : html.index('id="accounts"')]
    # A beat years old is flagged stale.
    assert (
        '<tr><td>bybit-live-main</td><td>2021-03-01 12:34:56 <span class="badge critical">stale</span></td>'
        '<td>tick ok</td><td class="num">1</td><td class="num">12.5</td></tr>'
    ) in bots

    pnl = html[html.index('id="daily-pnl"') : html.index('id="guard-events"')]
    assert "<td>March 1, 2021</td><td>bybit-live-main <span class=\"badge real\">real</span></td>" in pnl
    assert '<td class="num">10050.00</td>' in pnl


def test_dashboard_shows_infinite_profit_factor(staff_client):
    PairTradeFactory(state=PairTrade.State.CLOSED, closed_at=T0, realised_pnl=Decimal("5"))
    html = staff_client.get("/").text
    assert '<div class="label">Profit factor</div><div class="value">∞</div>' in html
    assert '<div class="label">Win rate</div><div class="value">100.0%</div>' in html


def test_health(client):
    response = client.get("/health/")
    assert response.status_code == 200
    data = response.json()
    assert data["checks"]["database"] == {"status": "ok"}
    assert data["checks"]["broker"] == {"status": "ok"}
    # No periodic task has run yet and no bot has reported: nothing is known to be stale.
    assert data["checks"]["beat"] == {"status": "unknown"}
    assert data["checks"]["bots"] == {"status": "ok", "bots": 0, "stale": 0}
    if settings.BROKER_IS_REDIS:  # no worker runs in this test: every shared queue is named (test_worker_check.py)
        assert data["checks"]["workers"]["status"] == "missing" and "risk" in data["checks"]["workers"]["missing"]
        assert data["status"] == "degraded"
    else:  # the embedded broker can't be asked which workers listen
        assert data["checks"]["workers"] == {"status": "unknown"}
        assert data["status"] == "ok"


def test_health_reports_a_stopped_bot_and_beat(client):
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    now = timezone.now()
    BotHeartbeat.objects.create(account=ExchangeAccountFactory(), beat_at=now - timedelta(minutes=10))
    BotHeartbeat.objects.create(account=ExchangeAccountFactory(), beat_at=now - timedelta(seconds=30))
    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="dispatch", task="execution.tasks.dispatch_bots", interval=every,
                                last_run_at=now - timedelta(minutes=20))

    relaxed = client.get("/health/")
    assert relaxed.status_code == 200
    data = relaxed.json()
    assert data["status"] == "degraded"
    assert data["checks"]["bots"] == {"status": "stale", "bots": 2, "stale": 1}
    assert data["checks"]["beat"]["status"] == "stale"
    assert client.get("/health/", {"strict": "1"}).status_code == 503


def test_health_reports_a_guard_switched_off_or_stale(client):
    """Beat's check reads any task: with the guard's schedule disabled in the admin's periodic tasks, every account
    traded without its limits while /health/ (strict too) stayed green."""
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    now = timezone.now()
    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="dispatch", task="execution.tasks.dispatch_bots", interval=every,
                                last_run_at=now - timedelta(seconds=30))
    assert client.get("/health/").json()["checks"]["guard"] == {"status": "ok"}  # nothing trades: nothing to guard
    account = ExchangeAccountFactory()
    BotHeartbeat.objects.create(account=account, beat_at=now)
    data = client.get("/health/").json()
    assert data["checks"]["beat"]["status"] == "ok" and data["checks"]["bots"]["status"] == "ok"
    assert data["checks"]["guard"] == {"status": "missing"} and data["status"] == "degraded"
    assert client.get("/health/", {"strict": "1"}).status_code == 503
    guard = PeriodicTask.objects.create(name="guard", task="monitoring.tasks.run_guard", interval=every,
                                        last_run_at=now - timedelta(seconds=40))
    assert client.get("/health/").json()["checks"]["guard"] == {"status": "ok", "seconds_since_last_run": 40}
    PeriodicTask.objects.filter(pk=guard.pk).update(last_run_at=now - timedelta(minutes=6))
    assert client.get("/health/").json()["checks"]["guard"]["status"] == "stale"
    PeriodicTask.objects.filter(pk=guard.pk).update(enabled=False, last_run_at=now)
    assert client.get("/health/").json()["checks"]["guard"] == {"status": "missing"}


def test_health_reports_accounts_the_guard_has_not_checked_in_time(client, settings):
    """Beat sending the guard's task says nothing of its cycles ending (the risk worker down, every cycle failing):
    then the bots open no trade (STATARB_GUARD_MAX_AGE_S) and /health/ says so, as it says stale heartbeats. A new
    account is given the setting's time for its first cycle, as the bots give it."""
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from risk.models import AccountGuardState

    settings.STATARB_GUARD_MAX_AGE_S = 300
    now = timezone.now()
    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="guard", task="monitoring.tasks.run_guard", interval=every,
                                last_run_at=now - timedelta(seconds=20))
    checked, silent = ExchangeAccountFactory(), ExchangeAccountFactory()
    AccountGuardState.objects.create(account=checked, live_checked_at=now - timedelta(seconds=70))
    AccountGuardState.objects.create(account=silent, live_checked_at=now - timedelta(minutes=20))
    ExchangeAccountFactory()  # new, never checked yet
    assert client.get("/health/").json()["checks"]["guard"] == {"status": "ok", "seconds_since_last_run": 20}

    ExchangeAccount.objects.update(updated_at=now - timedelta(hours=1))
    assert client.get("/health/").json()["checks"]["guard"] == {"status": "stale", "seconds_since_last_run": 20,
                                                                "accounts_unchecked": 2}
    assert client.get("/health/", {"strict": "1"}).status_code == 503


def test_health_reports_an_enabled_account_whose_bot_never_beat(client):
    from django.utils import timezone

    fresh = ExchangeAccountFactory()  # just enabled: its bot has a few minutes for its first beat
    assert client.get("/health/").json()["checks"]["bots"] == {"status": "ok", "bots": 0, "stale": 0}
    ExchangeAccount.objects.filter(pk=fresh.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert client.get("/health/").json()["checks"]["bots"] == {"status": "stale", "bots": 0, "stale": 1}
    assert client.get("/health/", {"strict": "1"}).status_code == 503
    ExchangeAccount.objects.filter(pk=fresh.pk).update(enabled=False)
    assert client.get("/health/").json()["checks"]["bots"]["status"] == "ok"


def test_health_reports_a_notification_that_gave_up_or_keeps_retrying(client):
    from django.utils import timezone

    from notifications.models import Delivery, Notification

    assert client.get("/health/").json()["checks"]["notifications"] == {
        "status": "ok", "failed_last_day": 0, "retrying_late": 0}
    note = Notification.objects.create(topic="guard_halt", text="halted", severity="critical")
    Delivery.objects.create(notification=note, channel="telegram", target="-100999", status=Delivery.Status.FAILED,
                            attempts=1, last_error="HTTP 400: Bad Request: chat not found")
    Delivery.objects.create(notification=note, channel="telegram", target="424242", attempts=5,
                            created_at=timezone.now() - timedelta(minutes=11))
    data = client.get("/health/").json()
    assert data["checks"]["notifications"] == {"status": "failing", "failed_last_day": 1, "retrying_late": 1}
    assert data["status"] == "degraded" and "chat not found" not in str(data)  # statuses and counts only
    assert client.get("/health/", {"strict": "1"}).status_code == 503


def test_schema_is_staff_only(client, django_user_model):
    assert client.get("/api/v1/schema/").status_code in (401, 403)
    client.force_login(django_user_model.objects.create_user(username="viewer", password="a-long-test-password"))
    assert client.get("/api/v1/schema/").status_code == 403


def test_schema_is_an_openapi_document_with_the_paths(staff_client):
    response = staff_client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "statarb API"
    for path in (
        "/api/v1/levels/", "/api/v1/pairs/", "/api/v1/accounts/", "/api/v1/trades/", "/api/v1/pnl/daily/",
        "/api/v1/performance/", "/api/v1/guard-events/", "/api/v1/halts/",
    ):
        assert path in document["paths"], path
    assert "/api/v1/schema/" not in document["paths"]
    # The account schema carries no credential field.
    account_schema = str(document["components"]["schemas"])
    assert "api_key" not in account_schema and "encrypted" not in account_schema
