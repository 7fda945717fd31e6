"""notify(): the outbox row, its deliveries by routing, held notifications, the nudge after the commit."""

from __future__ import annotations

import pytest
from django.db import transaction

from notifications.models import Delivery, Notification
from notifications.services import _nudge, notifications_echoed, notifications_held, notify
from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db


def test_deliveries_follow_the_severity_routing(telegram):
    info = notify(topic="trade_opened", text="opened")
    critical = notify(topic="guard_halt", text="halted", severity="critical")
    assert sorted(info.deliveries.values_list("channel", "target")) == [
        ("log", "statarb.notifications"), ("telegram", str(ALERTS_CHAT_ID))]
    assert sorted(critical.deliveries.values_list("channel", "target")) == [
        ("log", "statarb.notifications"), ("telegram", str(ALERTS_CHAT_ID)), ("telegram", str(ADMIN_CHAT_ID))]


def test_no_telegram_without_a_token(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    settings.TELEGRAM_CHAT_IDS = "-100123"
    note = notify(topic="trade_opened", text="opened")
    assert list(note.deliveries.values_list("channel", flat=True)) == ["log"]


def test_a_dedupe_key_makes_one_message(telegram):
    assert notify(topic="daily_summary", text="a", dedupe_key="k1") is not None
    assert notify(topic="daily_summary", text="b", dedupe_key="k1") is None
    assert Notification.objects.count() == 1 and Delivery.objects.count() == 2


def test_held_notifications_are_kept_without_deliveries_or_nudge(telegram, settings,
                                                                  django_capture_on_commit_callbacks):
    settings.NOTIFICATIONS_NUDGE = True
    with django_capture_on_commit_callbacks() as callbacks, notifications_held():
        note = notify(topic="trade_opened", text="replayed")
    assert note.status == Notification.Status.HELD and not note.deliveries.exists()
    assert callbacks == []


def test_a_send_is_nudged_after_the_commit_only_when_enabled(telegram, settings, django_capture_on_commit_callbacks):
    settings.NOTIFICATIONS_NUDGE = True
    with django_capture_on_commit_callbacks() as callbacks:
        notify(topic="trade_opened", text="live")
    assert callbacks == [_nudge]
    settings.NOTIFICATIONS_NUDGE = False
    with django_capture_on_commit_callbacks() as callbacks:
        notify(topic="trade_opened", text="live")
    assert callbacks == []


def test_secrets_are_masked_before_anything_is_stored(telegram):
    note = notify(topic="config", text=f"token {telegram.token} leaked")
    assert telegram.token not in note.text and "***" in note.text


def test_an_echo_sees_each_notification_once_its_transaction_commits(telegram, django_capture_on_commit_callbacks):
    seen = []
    with notifications_echoed(seen.append), notifications_held():
        with django_capture_on_commit_callbacks(execute=True):
            note = notify(topic="trade_opened", text="replayed")
            assert seen == []  # not before the commit
    assert seen == [note]
    # The echo adds nothing to the outbox: a held notification stays held, without deliveries.
    note.refresh_from_db()
    assert note.status == Notification.Status.HELD and not note.deliveries.exists()


def test_a_rolled_back_notification_is_never_echoed(telegram):
    seen = []
    with notifications_echoed(seen.append), pytest.raises(RuntimeError):
        with transaction.atomic():
            notify(topic="trade_opened", text="never happened")
            raise RuntimeError("rollback")
    assert seen == [] and not Notification.objects.filter(text="never happened").exists()


def test_outside_the_context_nothing_is_echoed(telegram, django_capture_on_commit_callbacks):
    seen = []
    with notifications_echoed(seen.append):
        pass
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        notify(topic="trade_opened", text="live")
    assert seen == [] and _nudge not in callbacks


NUDGE_THEN_EXIT = """
import pathlib, sys, time
import django
django.setup()
from notifications import services, tasks

def slow_enqueue(**kwargs):
    time.sleep(0.5)  # a broker a moment slow to answer
    pathlib.Path(sys.argv[1]).write_text("enqueued")

tasks.send_notifications.apply_async = slow_enqueue
services._nudge()
# The process ends here, as `manage.py halt` does once its halt is committed.
"""


def test_a_process_that_ends_right_after_a_nudge_still_enqueues_it(tmp_path):
    """A command's nudge runs on a daemon thread, which would die with the process: the alert would then wait for
    beat's sweep. The process waits (up to NUDGE_FLUSH_S) for it at exit."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    marker = tmp_path / "enqueued"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "statarb_site.settings.test", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", NUDGE_THEN_EXIT, str(marker)], cwd=REPO_ROOT, env=env, check=True,
                   timeout=60)
    assert marker.read_text() == "enqueued"
