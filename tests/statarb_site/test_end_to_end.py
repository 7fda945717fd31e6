"""The main job end to end on MariaDB + Redis, with a real Celery worker and a real Celery beat.

Import a slice of the shared candles (4 symbols), then a walk-forward replay on the stored data's clock screens,
grades, signals and trades the paper account 'replay' bar by bar, under a daily loss limit small enough to be
crossed, so the guard halts it. Its notifications are written to the outbox (``notify``). Then a real beat process
(the "notifications: send" schedule of setup_periodic_tasks, the only one left enabled, due at once because its last
run is an hour old) sends the sweep to a real worker process on the ``notifications`` queue, which delivers every
notification to the fake Telegram server on 127.0.0.1. The trading itself runs in this process (the replay drives
it on the 2021 clock: beat's wall-clock minutes would take days), the delivery through beat and the worker.

Runs when the suite runs on MySQL/MariaDB with a Redis broker (the worker and beat share its test database and
broker); on the embedded default (SQLite) it skips."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from execution.models import Fill, Order, PairTrade
from notifications.models import Delivery, Notification
from pairs.models import LevelChange, Pair
from replay.run import replay_run
from risk.models import DailyPnlSnapshot, Halt
from statarb_site.celery import app
from tests.conftest import REPO_ROOT
from tests.fakes.telegram import ALERTS_CHAT_ID, fake_telegram  # noqa: F401
from tests.live_server import session_database_url
from tests.replay.replay_world import START, import_market

pytestmark = [pytest.mark.worker, pytest.mark.services,
              pytest.mark.django_db(transaction=True, serialized_rollback=True)]

START_TIMEOUT_S = 60
DELIVERY_TIMEOUT_S = 90
DAILY_LOSS_LIMIT_PCT = 0.0005  # 0.05 % of the day's starting equity: the first losing day crosses it
SEND_SCHEDULE = "notifications: send"


@pytest.fixture
def on_mariadb_and_redis():
    if connection.vendor != "mysql" or not settings.BROKER_IS_REDIS:
        pytest.skip("the end-to-end test runs when the suite runs on MySQL/MariaDB + Redis (DATABASE_URL, "
                    "CELERY_BROKER_URL); the embedded default is a configuration, not a missing service")


def _start(name: str, command: list[str], env: dict[str, str], ready: str):
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "statarb_site", *command], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    started = threading.Event()

    def drain() -> None:
        for line in process.stdout:
            output.append(line)
            if ready in line:
                started.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not started.is_set() and process.poll() is None and time.monotonic() < deadline:
        started.wait(0.2)
    if not started.is_set():
        _stop(process)
        pytest.fail(f"celery {name} did not start:\n" + "".join(output))
    return process, output


def _stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_import_screen_grade_trade_halt_and_notify_then_the_dashboard_and_api_agree(
        on_mariadb_and_redis, shared_candles_dir, fake_telegram, settings, staff_client, api_client):  # noqa: F811
    telegram = {"TELEGRAM_BOT_TOKEN": fake_telegram.token, "TELEGRAM_API_URL": fake_telegram.base_url,
                "TELEGRAM_CHAT_IDS": f"{ALERTS_CHAT_ID}:info", "TELEGRAM_MIN_INTERVAL_S": "0",
                "NOTIFY_FOLD_WINDOW_S": "0"}
    for name, value in telegram.items():
        setattr(settings, name, float(value) if name.endswith("_S") else value)
    fake_telegram.set_rate_limits(enabled=False)

    # Import, screen, grade, signal, trade, cross the daily loss limit, halt: on the stored data's clock.
    config = import_market(shared_candles_dir)
    result = replay_run(start=START, end=START + timedelta(days=7, hours=12), config=config,
                        daily_loss_limit_pct=DAILY_LOSS_LIMIT_PCT, notify=True)
    account = result.account

    assert Pair.objects.exists() and not Pair.objects.filter(level__isnull=True).exists()
    assert LevelChange.objects.filter(pair__in=Pair.objects.all()).exists()  # grading moved a pair on the ladder
    trades = PairTrade.objects.filter(account=account)
    closed = trades.filter(state="closed")
    assert closed.count() >= 2
    for trade in closed:
        filled = {(leg, action) for leg, action in Fill.objects.filter(order__trade=trade).values_list(
            "order__leg", "order__action").distinct()}
        assert {(Order.Leg.Y, "open"), (Order.Leg.X, "open"), (Order.Leg.Y, "close"),
                (Order.Leg.X, "close")} <= filled, (trade.pk, filled)
    snapshots = DailyPnlSnapshot.objects.filter(account=account)
    assert snapshots.count() >= 5
    halts = Halt.objects.filter(account=account, source=Halt.Source.GUARD, trigger="daily_loss")
    assert halts.exists(), list(Halt.objects.values_list("trigger", "reason"))
    # What the replay wrote (the worker adds its own "worker started/stopped" notes once it runs).
    notes = Notification.objects.filter(pk__in=list(Notification.objects.values_list("pk", flat=True)))
    assert {"halt_raised", "trade_opened", "trade_closed"} <= set(notes.values_list("topic", flat=True))
    assert not Delivery.objects.filter(status=Delivery.Status.SENT).exists()

    # A real beat sends the sweep, a real worker delivers to the fake Telegram.
    call_command("setup_periodic_tasks", verbosity=0)
    PeriodicTask.objects.exclude(name=SEND_SCHEDULE).update(enabled=False)
    PeriodicTask.objects.filter(name=SEND_SCHEDULE).update(last_run_at=timezone.now() - timedelta(hours=1))
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("notifications")
    env = {**os.environ, "DATABASE_URL": session_database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND, "CELERY_TASK_ALWAYS_EAGER": "0",
           "DJANGO_SETTINGS_MODULE": "statarb_site.settings.test", **telegram}
    worker, worker_output = _start("worker", ["worker", "--pool", "solo", "-Q", "notifications", "--hostname",
                                              f"e2e-notifications-{os.getpid()}@%h", "--without-gossip",
                                              "--without-mingle", "-l", "info"], env, " ready.")
    beat = None
    try:
        beat, beat_output = _start("beat", ["beat", "-l", "info"], env,
                                   "beat: Starting")
        fake_telegram.wait_for_delivered(notes.count(), chat_id=ALERTS_CHAT_ID, timeout=DELIVERY_TIMEOUT_S)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S  # the worker records the last send after the fake took it
        pending = Delivery.objects.filter(notification__in=notes, status=Delivery.Status.PENDING)
        while pending.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if beat is not None:
            _stop(beat)
        _stop(worker)
    assert f"Sending due task {SEND_SCHEDULE}" in "".join(beat_output)
    assert re.search(r"notifications\.tasks\.send_notifications\[[0-9a-f-]+\] succeeded", "".join(worker_output))
    deliveries = Delivery.objects.filter(notification__in=notes, target=str(ALERTS_CHAT_ID))
    assert deliveries.count() == notes.count()
    assert not deliveries.exclude(status=Delivery.Status.SENT).exists()  # no folding window: one message each
    assert len(fake_telegram.delivered(ALERTS_CHAT_ID)) >= notes.count()
    texts = fake_telegram.delivered_texts(ALERTS_CHAT_ID)
    assert any("halt" in text.lower() and "daily loss" in text.lower() for text in texts), texts

    # The dashboard and the reporting API show the same KPIs of the account.
    api = api_client.get("/api/v1/performance/", {"account": account.name}).json()
    page = staff_client.get("/", {"scope": f"a{account.pk}"})
    assert page.status_code == 200
    summary = page.context["summary"]
    assert summary.label == api["label"] and summary.total_trades == api["total_trades"] == closed.count()
    for name in ("win_rate", "profit_factor", "total_return", "max_drawdown", "sharpe", "sortino", "expectancy"):
        assert (getattr(summary, name) is None and api[name] is None) or \
            getattr(summary, name) == pytest.approx(api[name], rel=1e-12), name
    assert summary.realised_pnl == Decimal(api["realised_pnl"])
    assert summary.realised_pnl == sum(t.realised_pnl for t in closed)
    html = page.content.decode()
    assert f'<div class="value">{api["total_trades"]}</div>' in html
    assert f"{float(api['realised_pnl']):.2f}" in html
