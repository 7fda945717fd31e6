"""A message that may already have arrived is sent again (never lost) and says so (never read as a second event)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.clock import ManualClock
from notifications.channels import REPEAT_MARK
from notifications.models import Delivery
from notifications.sender import LEASE, Sender
from notifications.services import notify
from tests.fakes.telegram import ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db


def headers(fake) -> list[str]:
    return [m.plain_text.splitlines()[0] for m in fake.delivered(ALERTS_CHAT_ID)]


def test_a_resend_after_an_unanswered_request_is_marked_as_a_possible_repeat(telegram):
    """The request went out, Telegram delivered it, the answer never came back: the retry is a duplicate in the chat,
    and without a mark a trader reads two "trade opened" as two trades."""
    notify(topic="trade_opened", text="[lvl1] BTC/ETH trade 7 opened")
    clock = ManualClock(timezone.now())
    with telegram.outage("after_deliver_drop"):
        assert Sender(clock=clock).run(budget_s=5).retried == 1
    row = Delivery.objects.get(target=str(ALERTS_CHAT_ID))
    assert row.status == Delivery.Status.PENDING and row.maybe_sent

    clock.advance(timedelta(minutes=1))
    Sender(clock=clock).run(budget_s=5)

    first, second = headers(telegram)
    assert REPEAT_MARK.strip() not in first
    assert second.endswith(f"trade_opened{REPEAT_MARK}")
    assert [m.plain_text.splitlines()[1] for m in telegram.delivered(ALERTS_CHAT_ID)] == [
        "[lvl1] BTC/ETH trade 7 opened"] * 2


@pytest.mark.parametrize("mode", ["after_deliver_502", "timeout"])
def test_a_resend_after_a_5xx_answer_is_marked_as_a_possible_repeat(telegram, mode):
    """A gateway in front of the Bot API answers 502 when it lost the server's answer, 504 when the server did not
    answer in time: neither proves the message was not delivered (after_deliver_502: it was)."""
    notify(topic="trade_opened", text="[lvl1] BTC/ETH trade 7 opened")
    clock = ManualClock(timezone.now())
    with telegram.outage(mode, hold_s=0.1):
        assert Sender(clock=clock).run(budget_s=1, wait_for_due=False).retried == 1
    row = Delivery.objects.get(target=str(ALERTS_CHAT_ID))
    assert row.status == Delivery.Status.PENDING and row.maybe_sent and row.last_error.startswith("HTTP 50")

    clock.advance(timedelta(minutes=1))
    Sender(clock=clock).run(budget_s=5)
    assert headers(telegram)[-1].endswith(f"trade_opened{REPEAT_MARK}")
    assert Delivery.objects.get(target=str(ALERTS_CHAT_ID)).status == Delivery.Status.SENT


def test_a_resend_after_a_refused_connection_is_not_marked(telegram):
    notify(topic="trade_opened", text="opened")
    clock = ManualClock(timezone.now())
    with telegram.outage("refuse"):
        Sender(clock=clock).run(budget_s=1)
    assert not Delivery.objects.get(target=str(ALERTS_CHAT_ID)).maybe_sent  # it never went out
    clock.advance(timedelta(minutes=1))
    Sender(clock=clock).run(budget_s=5)
    assert [REPEAT_MARK.strip() in header for header in headers(telegram)] == [False]


def test_a_message_taken_over_from_a_sender_that_died_before_recording_is_marked(telegram, monkeypatch):
    class Killed(BaseException):  # as SIGKILL: nothing in the sender catches it
        pass

    def dies(self, *args, **kwargs):
        raise Killed

    notify(topic="guard_halt", text="halted lvl1", severity="critical")
    clock = ManualClock(timezone.now())
    monkeypatch.setattr(Sender, "_record", dies)
    with pytest.raises(Killed):
        Sender(clock=clock).run(budget_s=5)
    monkeypatch.undo()
    assert len(telegram.delivered(ALERTS_CHAT_ID)) == 1  # delivered, but nobody recorded it

    clock.advance(LEASE + timedelta(seconds=1))
    Sender(clock=clock).run(budget_s=5)
    first, second = headers(telegram)
    assert second.endswith(f"guard_halt{REPEAT_MARK}") and REPEAT_MARK.strip() not in first
    assert Delivery.objects.get(target=str(ALERTS_CHAT_ID)).status == Delivery.Status.SENT


def test_a_request_that_timed_out_waiting_for_its_answer_may_have_arrived(telegram):
    from notifications.channels import Message, TelegramChannel

    channel = TelegramChannel(token=telegram.token, api_url=telegram.base_url, timeout_s=0.2)
    try:
        with telegram.outage("timeout", hold_s=1.0):
            outcome = channel.send(str(ALERTS_CHAT_ID), Message("trade_opened", "info", "opened"))
    finally:
        channel.close()
    assert (outcome.kind, outcome.maybe_delivered) == ("retry", True)
    assert outcome.reason.startswith("ReadTimeout")


def test_a_sender_killed_mid_batch_loses_nothing_and_repeats_only_the_message_it_had_not_recorded(telegram,
                                                                                                  monkeypatch):
    class Killed(BaseException):
        pass

    texts = [f"event {index}" for index in range(5)]
    for index, text in enumerate(texts):
        notify(topic=f"topic_{index}", text=text)
    telegram_records = []
    real_record = Sender._record

    def dies_on_the_third_telegram_message(self, head, follower_ids, outcome, **kwargs):
        if head.channel == Delivery.Channel.TELEGRAM:
            telegram_records.append(head.pk)
            if len(telegram_records) == 3:
                raise Killed
        return real_record(self, head, follower_ids, outcome, **kwargs)

    clock = ManualClock(timezone.now())
    monkeypatch.setattr(Sender, "_record", dies_on_the_third_telegram_message)
    with pytest.raises(Killed):
        Sender(clock=clock).run(budget_s=5)
    monkeypatch.undo()
    clock.advance(LEASE + timedelta(seconds=1))
    Sender(clock=clock).run(budget_s=5)

    delivered = telegram.delivered(ALERTS_CHAT_ID)
    assert [m.plain_text.splitlines()[1] for m in delivered] == [*texts[:3], *texts[2:]]
    assert [REPEAT_MARK in m.plain_text.splitlines()[0] for m in delivered] == [False, False, False, True, False,
                                                                                 False]
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENT}


def test_the_admin_shows_a_delivery_sent_as_a_possible_repeat(telegram, admin_client):
    note = notify(topic="trade_opened", text="opened")
    Delivery.objects.filter(notification=note).update(maybe_sent=True)
    page = admin_client.get(f"/admin/notifications/notification/{note.pk}/change/")
    assert page.status_code == 200 and b"Maybe sent" in page.content


def test_a_sender_that_read_the_queue_before_another_tried_the_message_leaves_it_to_its_retry(telegram, settings,
                                                                                            monkeypatch):
    """Two senders (a nudge and beat's sweep): A reads the chat's head, B tries that message first and its answer is
    lost after Telegram delivered it. A must not send its stale copy at once, unmarked and ignoring the retry's wait:
    the message goes again only when its retry comes due, marked as a possible repeat."""
    import notifications.sender as sender_module

    settings.TELEGRAM_CHAT_IDS = str(ALERTS_CHAT_ID)
    settings.NOTIFY_LOG_SEVERITY = "off"
    notify(topic="trade_opened", text="[lvl1] BTC/ETH trade 7 opened")
    clock = ManualClock(timezone.now())
    real_heads = sender_module._queue_heads
    calls = []

    def heads_then_another_sender_tries():
        heads = real_heads()
        calls.append(1)
        if len(calls) == 1:  # A has read the queue; B runs before A claims
            with telegram.outage("after_deliver_drop"):
                assert Sender(clock=clock).run(budget_s=1, wait_for_due=False).retried == 1
        return heads

    monkeypatch.setattr(sender_module, "_queue_heads", heads_then_another_sender_tries)
    Sender(clock=clock).run(budget_s=1, wait_for_due=False)
    monkeypatch.undo()
    assert len(telegram.delivered(ALERTS_CHAT_ID)) == 1  # B's, delivered though its answer was lost
    row = Delivery.objects.get()
    assert (row.status, row.attempts, row.maybe_sent) == (Delivery.Status.PENDING, 1, True)

    clock.advance(timedelta(minutes=1))
    Sender(clock=clock).run(budget_s=5)
    first, second = headers(telegram)
    assert REPEAT_MARK.strip() not in first and second.endswith(f"trade_opened{REPEAT_MARK}")
    assert Delivery.objects.get().status == Delivery.Status.SENT


def test_a_send_cut_by_an_exception_goes_on_after_the_parts_delivered_and_says_it_may_repeat(telegram, monkeypatch):
    """The task's soft time limit (prefork workers: 50 s) is raised wherever the sender is, here while the answer to
    part 2 is read: parts 1 and 2 are in the chat. The retry must go on from part 2 (it may have arrived), marked, not
    send the whole message again unmarked."""
    from billiard.exceptions import SoftTimeLimitExceeded

    from notifications import channels

    text = "\n".join("y" * 70 for _ in range(120))  # three parts
    notify(topic="daily_summary", text=text)
    real_send_one, calls = channels.TelegramChannel._send_one, []

    def limit_hits_while_reading_part_2(self, chat_id, text):
        calls.append(text)
        outcome = real_send_one(self, chat_id, text)
        if len(calls) == 2:
            raise SoftTimeLimitExceeded()
        return outcome

    monkeypatch.setattr(channels.TelegramChannel, "_send_one", limit_hits_while_reading_part_2)
    clock = ManualClock(timezone.now())
    Sender(clock=clock).run(budget_s=1, wait_for_due=False)
    monkeypatch.undo()
    row = Delivery.objects.get(target=str(ALERTS_CHAT_ID))
    assert (row.status, row.parts_sent, row.maybe_sent) == (Delivery.Status.PENDING, 1, True)

    clock.advance(timedelta(minutes=1))
    Sender(clock=clock).run(budget_s=5)
    assert [header[-5:] for header in headers(telegram)] == ["(1/3)", "(2/3)", "(2/3)", "(3/3)"]
    assert [REPEAT_MARK in header for header in headers(telegram)] == [False, False, True, True]
    assert Delivery.objects.get(target=str(ALERTS_CHAT_ID)).status == Delivery.Status.SENT
