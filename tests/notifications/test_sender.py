"""The sender against the fake Telegram Bot API: delivery, routing, limits, outages, refusals, two senders."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from core.clock import ManualClock
from notifications.models import Delivery, Notification
from notifications.sender import Sender, backoff_s, deliveries_failing, notifications_send
from notifications.services import notify
from tests.concurrency import twice_at_once
from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db


def test_a_notification_reaches_the_chats_its_severity_is_routed_to(telegram):
    notify(topic="trade_opened", text="BTC/ETH opened <long> & sized", severity="info")
    notify(topic="guard_halt", text="daily loss limit hit", severity="critical")

    report = notifications_send(budget_s=10)

    assert report.sent == 5  # info: alerts + log; critical: alerts + operator + log
    alerts = telegram.delivered(ALERTS_CHAT_ID)
    assert [m.plain_text.splitlines()[1] for m in alerts] == ["BTC/ETH opened <long> & sized",
                                                              "daily loss limit hit"]
    assert [m.parse_mode for m in alerts] == ["HTML", "HTML"]
    assert [m.plain_text.splitlines()[1] for m in telegram.delivered(ADMIN_CHAT_ID)] == ["daily loss limit hit"]
    assert set(Notification.objects.values_list("status", flat=True)) == {Notification.Status.SENT}
    assert not Delivery.objects.exclude(status=Delivery.Status.SENT).exists()
    assert notifications_send(budget_s=5).sent == 0  # nothing is sent twice


def test_the_log_channel_writes_every_notification(telegram, caplog):
    notify(topic="worker_started", text="worker w1 up")
    with caplog.at_level("INFO", logger="statarb.notifications"):
        notifications_send(budget_s=5)
    assert "[info] worker_started: worker w1 up" in caplog.text


def test_email_goes_to_the_recipients_of_its_severity(telegram, settings, mailoutbox):
    settings.NOTIFY_EMAIL_TO = "desk@example.com:warning,boss@example.com:critical"
    notify(topic="trade_opened", text="info only")
    notify(topic="order_rejected", text="rejected: insufficient margin", severity="warning")
    notifications_send(budget_s=5)
    assert [(m.to, m.subject) for m in mailoutbox] == [(["desk@example.com"], "[statarb warning] order_rejected")]


def test_a_429_waits_what_retry_after_says(telegram):
    telegram.force_rate_limit(1, retry_after=7, chat_id=ALERTS_CHAT_ID)
    notify(topic="trade_opened", text="first")
    clock = ManualClock(timezone.now())

    report = Sender(clock=clock).run(budget_s=5)

    assert report.retried == 1 and telegram.delivered(ALERTS_CHAT_ID) == []
    row = Delivery.objects.get(target=str(ALERTS_CHAT_ID))
    assert row.status == Delivery.Status.PENDING and row.attempts == 1 and "429" in row.last_error
    assert row.next_attempt_at == clock.now() + timedelta(seconds=7)
    clock.advance(timedelta(seconds=6))
    assert Sender(clock=clock).run(budget_s=5).sent == 0  # not before retry_after
    clock.advance(timedelta(seconds=1))
    assert Sender(clock=clock).run(budget_s=5).sent == 1
    assert [m.plain_text.splitlines()[1] for m in telegram.delivered(ALERTS_CHAT_ID)] == ["first"]


def test_real_flood_limits_are_kept_without_a_429(telegram, settings):
    settings.TELEGRAM_MIN_INTERVAL_S = 1.0
    telegram.set_rate_limits(enabled=True)  # 1 a second per chat
    for index in range(3):
        notify(topic=f"topic_{index}", text=f"message {index}")
    notifications_send(budget_s=15)
    assert len(telegram.delivered(ALERTS_CHAT_ID)) == 3
    assert not [r for r in telegram.requests_to("sendMessage") if r.status == 429]


@pytest.mark.parametrize("mode", ["refuse", "http_502", "timeout"])
def test_an_outage_of_minutes_then_recovery_delivers_everything_once_in_order(telegram, mode):
    texts = [f"event {index}" for index in range(6)]
    telegram.outage(mode, hold_s=0.2)
    for index, text in enumerate(texts):
        notify(topic=f"topic_{index}", text=text)
    clock = ManualClock(timezone.now())
    for _ in range(10):  # ten minutes of sweeps every minute, during the outage
        Sender(clock=clock).run(budget_s=5)
        clock.advance(timedelta(minutes=1))
    assert telegram.delivered() == []
    head = Delivery.objects.filter(target=str(ALERTS_CHAT_ID)).order_by("id").first()
    assert head.attempts >= 4 and head.status == Delivery.Status.PENDING  # retried, never given up
    assert Delivery.objects.filter(target=str(ALERTS_CHAT_ID), attempts=0).count() == 5  # the rest wait their turn

    telegram.recover()
    clock.advance(timedelta(minutes=5))  # past the longest backoff
    Sender(clock=clock).run(budget_s=10)

    assert [m.plain_text.splitlines()[1] for m in telegram.delivered(ALERTS_CHAT_ID)] == texts
    assert deliveries_failing() == {"failed": 0, "retrying": 0}


def test_a_400_gives_up_with_the_reason_and_does_not_block_the_next(telegram, settings):
    settings.TELEGRAM_CHAT_IDS = f"-100999:info,{ALERTS_CHAT_ID}:info"  # the first chat does not exist
    notify(topic="trade_opened", text="one")
    report = notifications_send(budget_s=5)
    dead = Delivery.objects.get(target="-100999")
    assert dead.status == Delivery.Status.FAILED and dead.last_error == "HTTP 400: Bad Request: chat not found"
    assert report.failed == 1 and len(telegram.delivered(ALERTS_CHAT_ID)) == 2  # the message, then the loss
    assert Notification.objects.get(topic="trade_opened").status == Notification.Status.FAILED
    assert deliveries_failing()["failed"] == 1


def test_a_destination_that_gives_up_is_announced_to_the_others_once_a_day(telegram, settings):
    """A blocked bot or a deleted chat silences every alert to it: the other chats hear of it at once (the log alone
    was read by nobody), not from the chat itself, and not again for each later message that gives up."""
    telegram.block_chat(ADMIN_CHAT_ID)
    notify(topic="guard_halt", text="halted", severity="critical")
    notify(topic="guard_halt", text="halted again", severity="critical")
    notifications_send(budget_s=5)

    lost = Notification.objects.get(topic="notification_destination_lost")
    assert lost.severity == "critical" and lost.text.startswith(f"Notifications to telegram {ADMIN_CHAT_ID} stopped")
    assert sorted(d.target for d in lost.deliveries.all()) == sorted([str(ALERTS_CHAT_ID), "statarb.notifications"])
    alerts = [m.plain_text.splitlines()[1] for m in telegram.delivered(ALERTS_CHAT_ID)]
    assert alerts.count(f"Notifications to telegram {ADMIN_CHAT_ID} stopped: HTTP 403: Forbidden: bot was blocked "
                        "by the user") == 1
    assert Delivery.objects.filter(target=str(ADMIN_CHAT_ID), status=Delivery.Status.FAILED).count() == 2


def test_a_message_refused_for_its_own_content_is_not_announced_as_a_lost_destination(telegram, monkeypatch):
    """A 400 about the one message (Telegram's 'message text is empty') says nothing of the chat: later messages go
    through, so the others are not told that its notifications stopped."""
    from notifications import channels

    notify(topic="trade_opened", text="one")
    outcome = channels.telegram_outcome(httpx.Response(400, json={
        "ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}))
    assert outcome.kind == "give_up" and not outcome.destination_lost
    for description, code in (("Bad Request: chat not found", 400), ("Forbidden: bot was blocked by the user", 403),
                              ("Forbidden: bot was kicked from the group chat", 403)):
        lost = channels.telegram_outcome(httpx.Response(code, json={"ok": False, "error_code": code,
                                                                     "description": description}))
        assert lost.kind == "give_up" and lost.destination_lost, description

    monkeypatch.setattr(channels, "telegram_outcome", lambda response: outcome)
    report = notifications_send(budget_s=5)
    assert report.failed == 1  # the alerts chat gave up on this message
    assert not Notification.objects.filter(topic="notification_destination_lost").exists()


def test_a_delivery_that_gave_up_is_logged_and_sent_again_from_the_admin(telegram, settings, client,
                                                                          django_user_model, caplog):
    from core.models import AuditEntry

    telegram.block_chat(ADMIN_CHAT_ID)
    notify(topic="guard_halt", text="halted", severity="critical")
    with caplog.at_level("ERROR", logger="notifications.sender"):
        notifications_send(budget_s=5)
    row = Delivery.objects.get(target=str(ADMIN_CHAT_ID))
    assert row.status == Delivery.Status.FAILED
    assert any("gave up" in r.getMessage() and "Send again" in r.getMessage() for r in caplog.records)
    assert settings.TELEGRAM_BOT_TOKEN not in caplog.text

    viewer = django_user_model.objects.create_user("v", password="a-long-test-password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(viewer)
    changelist = "/admin/notifications/delivery/"
    client.post(changelist, {"action": "send_again", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == Delivery.Status.FAILED  # not offered without the permission: nothing changed

    telegram.block_chat(ADMIN_CHAT_ID, blocked=False)
    admin = django_user_model.objects.create_superuser("root", password="a-long-test-password")
    client.force_login(admin)
    client.post(changelist, {"action": "send_again", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == Delivery.Status.PENDING
    assert AuditEntry.objects.get(action="send_again").actor == admin
    notifications_send(budget_s=5)
    row.refresh_from_db()
    assert row.status == Delivery.Status.SENT
    assert Notification.objects.get(topic="guard_halt").status == Notification.Status.SENT
    assert [m.plain_text.splitlines()[-1] for m in telegram.delivered(ADMIN_CHAT_ID)] == ["halted"]


def test_a_blocked_bot_gives_up_with_403(telegram):
    telegram.block_chat(ADMIN_CHAT_ID)
    notify(topic="guard_halt", text="halted", severity="critical")
    notifications_send(budget_s=5)
    row = Delivery.objects.get(target=str(ADMIN_CHAT_ID))
    assert row.status == Delivery.Status.FAILED and row.last_error.startswith("HTTP 403: Forbidden")


def test_a_message_longer_than_4096_characters_is_split_into_marked_parts(telegram):
    lines = [f"line {index:05d} " + "x" * 60 for index in range(200)]  # ~14,000 characters
    notify(topic="daily_summary", text="\n".join(lines))
    notifications_send(budget_s=10)
    parts = telegram.delivered(ALERTS_CHAT_ID)
    assert len(parts) == 4
    assert [p.plain_text.splitlines()[0][-5:] for p in parts] == ["(1/4)", "(2/4)", "(3/4)", "(4/4)"]
    assert all(len(p.plain_text) <= 4096 for p in parts)
    received = [line for p in parts for line in p.plain_text.splitlines()[1:]]
    assert received == lines


def test_a_retry_of_a_long_message_goes_on_from_the_part_that_failed(telegram):
    import time

    notify(topic="daily_summary", text="\n".join("y" * 70 for _ in range(120)))  # three parts
    telegram.set_rate_limits(enabled=True)  # 1 a second per chat: part 2 right after part 1 gets a 429
    clock = ManualClock(timezone.now())
    Sender(clock=clock).run(budget_s=5)
    row = Delivery.objects.get(target=str(ALERTS_CHAT_ID))
    assert len(telegram.delivered(ALERTS_CHAT_ID)) == 1 and row.parts_sent == 1 and "429" in row.last_error
    for _ in range(4):
        time.sleep(1.05)
        clock.advance(timedelta(seconds=2))
        Sender(clock=clock).run(budget_s=5)
    parts = telegram.delivered(ALERTS_CHAT_ID)
    assert [p.plain_text.splitlines()[0][-5:] for p in parts] == ["(1/3)", "(2/3)", "(3/3)"]  # none twice
    row.refresh_from_db()
    assert row.status == Delivery.Status.SENT and row.parts_sent == 3


def test_a_sender_killed_between_the_parts_of_a_long_message_resumes_after_the_parts_delivered(telegram,
                                                                                               monkeypatch):
    from notifications import channels, sender

    class Killed(BaseException):  # not an Exception: nothing in the sender catches it, as with SIGKILL
        pass

    notify(topic="daily_summary", text="\n".join("y" * 70 for _ in range(120)))  # three parts
    real_send_one, sent = channels.TelegramChannel._send_one, []

    def dies_before_the_third(self, chat_id, text):
        if len(sent) == 2:
            raise Killed
        sent.append(text)
        return real_send_one(self, chat_id, text)

    monkeypatch.setattr(channels.TelegramChannel, "_send_one", dies_before_the_third)
    clock = ManualClock(timezone.now())
    with pytest.raises(Killed):
        Sender(clock=clock).run(budget_s=5)
    monkeypatch.setattr(channels.TelegramChannel, "_send_one", real_send_one)
    assert Delivery.objects.get(target=str(ALERTS_CHAT_ID)).parts_sent == 2  # stored as they went

    clock.advance(sender.LEASE + timedelta(seconds=1))  # the dead sender's lease runs out
    Sender(clock=clock).run(budget_s=5)
    parts = telegram.delivered(ALERTS_CHAT_ID)
    assert [p.plain_text.splitlines()[0][-5:] for p in parts] == ["(1/3)", "(2/3)", "(3/3)"]  # none twice


def test_a_burst_of_one_topic_folds_into_one_message_with_a_count(telegram):
    notify(topic="trade_error", text="tick failed: timeout 1", severity="warning")
    clock = ManualClock(timezone.now())
    Sender(clock=clock).run(budget_s=5)
    for index in range(2, 21):
        notify(topic="trade_error", text=f"tick failed: timeout {index}", severity="warning")
    notify(topic="trade_opened", text="BTC/ETH opened")
    clock.set(timezone.now())
    Sender(clock=clock).run(budget_s=5)  # within the fold window: the errors wait, and so does what follows
    assert len(telegram.delivered(ALERTS_CHAT_ID)) == 1
    clock.advance(timedelta(seconds=16))
    Sender(clock=clock).run(budget_s=5)

    texts = [m.plain_text for m in telegram.delivered(ALERTS_CHAT_ID)]
    assert len(texts) == 3
    assert texts[1].splitlines()[1:] == ["tick failed: timeout 2", "", "+18 more 'trade_error':",
                                          *[f"tick failed: timeout {index}" for index in range(3, 21)]]
    assert "BTC/ETH opened" in texts[2]
    assert Delivery.objects.filter(channel="telegram", status=Delivery.Status.FOLDED).count() == 18
    # the log channel keeps every message
    assert Delivery.objects.filter(channel="log", status=Delivery.Status.SENT).count() == 21


def test_repeated_lines_are_counted_and_old_backlogs_are_not_folded(telegram, settings):
    clock = ManualClock(timezone.now())
    notify(topic="reconcile_failed", text="exchange unreachable", severity="warning")
    for _ in range(4):
        notify(topic="reconcile_failed", text="exchange unreachable\ntraceback...", severity="warning")
    later = list(Notification.objects.order_by("-id").values_list("pk", flat=True)[:3])
    Delivery.objects.filter(notification__in=later).update(
        created_at=timezone.now() + timedelta(minutes=5))  # a later burst: not folded into the first
    clock.set(timezone.now() + timedelta(minutes=6))
    Sender(clock=clock).run(budget_s=5)
    texts = [m.plain_text for m in telegram.delivered(ALERTS_CHAT_ID)]
    assert texts[0].splitlines()[1:] == ["exchange unreachable", "", "+1 more 'reconcile_failed':",
                                         "exchange unreachable", "traceback..."]  # folded whole
    assert len(texts) == 1  # the later burst waits out the topic's quiet window
    clock.advance(timedelta(seconds=16))
    Sender(clock=clock).run(budget_s=5)
    texts = [m.plain_text for m in telegram.delivered(ALERTS_CHAT_ID)]
    assert texts[1].splitlines()[-4:] == ["", "+2 more 'reconcile_failed':", "(x2) exchange unreachable",
                                          "traceback..."]


def test_the_bot_token_never_reaches_a_stored_error_or_text(telegram, settings):
    settings.TELEGRAM_API_URL = "http://127.0.0.1:9"  # nothing listens: the error names the URL, if anything
    notify(topic="config", text=f"token is {telegram.token}")
    notifications_send(budget_s=0.5)  # one attempt: a longer budget would only wait out the backoffs
    for row in Delivery.objects.all():
        assert telegram.token not in row.last_error
    assert telegram.token not in Notification.objects.get().text


def test_backoff_grows_with_jitter_up_to_its_cap():
    import random

    rng = random.Random(1)
    first = [backoff_s(1, rng=rng) for _ in range(50)]
    assert 1.0 <= min(first) and max(first) <= 2.0 and len(set(first)) > 1
    assert 4.0 <= backoff_s(3, rng=rng) <= 8.0
    assert 150.0 <= backoff_s(40, rng=rng) <= 300.0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_senders_at_once_send_each_message_once(telegram):
    for chat in range(5):
        telegram.add_chat(-200 - chat, f"chat {chat}")
    from django.conf import settings

    settings.TELEGRAM_CHAT_IDS = ",".join(str(-200 - chat) for chat in range(5))
    texts = [f"message {index}" for index in range(40)]
    for index, text in enumerate(texts):
        notify(topic=f"t{index}", text=text)
    reports = []
    assert twice_at_once(lambda: reports.append(Sender().run(budget_s=30)), timeout_s=60) == []
    for chat in range(5):
        received = [m.plain_text.splitlines()[1] for m in telegram.delivered(-200 - chat)]
        assert received == texts  # each once, in order
    assert sum(r.sent for r in reports) == 40 * 6  # five chats and the log
    assert all(r.sent > 0 for r in reports)  # both really sent


def test_a_long_message_keeps_its_lease_part_after_part_and_a_dead_senders_chat_frees_within_the_lease(
        telegram, monkeypatch):
    """The lease is short (a killed sender's chat is free again within half a minute) and renewed after each part,
    so a slow multi-part send is never taken over (and duplicated) by another sender while it is still going."""
    from notifications import channels, sender

    notify(topic="daily_summary", text="\n".join("z" * 70 for _ in range(120)))  # three parts
    clock = ManualClock(timezone.now())
    real_send_one, held = channels.TelegramChannel._send_one, []

    def slow_part(self, chat_id, text):
        clock.advance(timedelta(seconds=20))  # each part takes 20 s: three of them outlast one lease
        row = Delivery.objects.get(target=str(ALERTS_CHAT_ID))
        held.append(row.lease_until is not None and row.lease_until > clock.now())
        return real_send_one(self, chat_id, text)

    monkeypatch.setattr(channels.TelegramChannel, "_send_one", slow_part)
    Sender(clock=clock).run(budget_s=10)
    assert held == [True, True, True]  # without the renewal, the third part is sent on an expired lease
    assert Delivery.objects.get(target=str(ALERTS_CHAT_ID)).status == Delivery.Status.SENT
    assert sender.LEASE <= timedelta(seconds=30)


def _plans(queries) -> list[str]:
    from django.db import connection

    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    plans = []
    with connection.cursor() as cursor:
        for query in queries:
            cursor.execute(explain + query["sql"])
            plans.append(" ".join(str(cell) for row in cursor.fetchall() for cell in row))
    return plans


def test_the_sends_of_the_last_seconds_are_read_without_going_through_the_chats_whole_history(telegram):
    """Every pass of every sender asks for the chat's sends within the fold window and the per-chat spacing: on a
    year of history (some 300,000 deliveries) reading each chat's every sent delivery took 115 and 340 ms a call on
    MariaDB; through an index on the send time, a few ms."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from notifications.folding import quiet_until
    from notifications.sender import _Pacer

    long_ago = timezone.now() - timedelta(days=30)
    notes = Notification.objects.bulk_create([Notification(topic="trade_opened", text=f"old {index}",
                                                           status=Notification.Status.SENT) for index in range(500)])
    Delivery.objects.bulk_create([
        Delivery(notification=note, channel=Delivery.Channel.TELEGRAM, target=str(ALERTS_CHAT_ID),
                 status=Delivery.Status.SENT, sent_at=long_ago + timedelta(minutes=index), created_at=long_ago)
        for index, note in enumerate(notes)])
    head = Delivery.objects.select_related("notification").get(
        notification=notify(topic="trade_opened", text="new"), channel=Delivery.Channel.TELEGRAM)
    with CaptureQueriesContext(connection) as window:
        quiet_until(head, timezone.now())
    with CaptureQueriesContext(connection) as spacing:
        _Pacer().load(timezone.now())

    for plan in _plans([*window.captured_queries, *spacing.captured_queries]):
        assert "notif_delivery_recent_sends" in plan, plan
