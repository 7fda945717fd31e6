"""The sender's folding, priorities and pacing against the fake Telegram Bot API: a folded message carries every
message whole, critical messages are never folded nor held behind a fold window, a run waits for what comes due
within its budget, and the per-chat spacing holds across runs and between the parts of a split message."""

from __future__ import annotations

import itertools
import random
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.clock import ManualClock
from notifications.folding import FOLD_MAX_CHARS
from notifications.models import Delivery
from notifications.sender import Sender
from notifications.services import notify
from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db


def _texts(telegram, chat_id: int) -> list[str]:
    return [m.plain_text for m in telegram.delivered(chat_id)]


def _summary(name: str) -> str:
    return f"[{name}] 2024-01-01 (UTC)\ntrades opened 3, closed 2\nrealised PnL -512 USDT\nequity 10000 -> 9488 USDT"


# ------------------------------------------------------------------------------------------------------- folding


def test_a_folded_message_carries_every_message_whole(telegram):
    """Daily summaries share one topic for every account: each account's figures must arrive, not its first line."""
    for name in ("a", "b", "c"):
        notify(topic="daily_summary", text=_summary(name), dedupe_key=f"ds:{name}")

    Sender(clock=ManualClock(timezone.now())).run(budget_s=5)

    (text,) = _texts(telegram, ALERTS_CHAT_ID)  # still one message for the burst
    assert text.splitlines()[1:] == [*_summary("a").splitlines(), "", "+2 more 'daily_summary':",
                                     *_summary("b").splitlines(), "", *_summary("c").splitlines()]
    assert Delivery.objects.filter(channel="telegram", status=Delivery.Status.FOLDED).count() == 2


def test_critical_messages_are_never_folded(telegram):
    """Two halts written together: each goes out whole, on its own, to both chats (the second account's reason and
    flatten notice were lost in the first one's fold)."""
    halts = ["Halt: acct-a\nreason: daily loss\nby: guard",
             "Halt: acct-b\nreason: drawdown 12%\nby: guard\nopen trades are being closed (flatten)"]
    for text in halts:
        notify(topic="halt_raised", text=text, severity="critical")

    Sender(clock=ManualClock(timezone.now())).run(budget_s=5)

    for chat in (ALERTS_CHAT_ID, ADMIN_CHAT_ID):
        assert [text.split("\n", 1)[1] for text in _texts(telegram, chat)] == halts
    assert not Delivery.objects.filter(status=Delivery.Status.FOLDED).exists()


def test_a_critical_message_in_a_burst_of_its_topic_is_not_folded_into_a_warning(telegram):
    notify(topic="reconcile_failed", text="exchange unreachable", severity="warning")
    notify(topic="reconcile_failed", text="positions differ: BTC 0.5 vs 0.3", severity="critical")
    notify(topic="reconcile_failed", text="exchange unreachable again", severity="warning")

    Sender(clock=ManualClock(timezone.now())).run(budget_s=5)

    texts = _texts(telegram, ALERTS_CHAT_ID)
    assert texts[0].splitlines()[1:] == ["exchange unreachable", "", "+1 more 'reconcile_failed':",
                                         "exchange unreachable again"]
    assert texts[1].splitlines()[1:] == ["positions differ: BTC 0.5 vs 0.3"]


def test_a_burst_longer_than_the_fold_limit_goes_on_in_the_next_message(telegram):
    """Whole texts make a folded message longer: past FOLD_MAX_CHARS the rest waits for the topic's next message
    (nothing lost, the order kept), and every part stays within Telegram's 4,096 characters."""
    texts = [f"tick {index:03d} failed\n" + "detail " * 140 for index in range(20)]  # ~1,000 characters each
    for text in texts:
        notify(topic="trade_error", text=text.strip(), severity="warning")
    clock = ManualClock(timezone.now())

    Sender(clock=clock).run(budget_s=5)
    first = Delivery.objects.filter(channel="telegram").exclude(status=Delivery.Status.PENDING).count()
    assert 2 <= first < 20  # some folded, the rest pending
    clock.advance(timedelta(seconds=16))
    Sender(clock=clock).run(budget_s=5)
    clock.advance(timedelta(seconds=16))
    Sender(clock=clock).run(budget_s=5)

    parts = telegram.delivered(ALERTS_CHAT_ID)
    assert all(len(part.plain_text) <= 4096 for part in parts)
    received = "\n".join(part.plain_text for part in parts)
    assert [received.index(f"tick {index:03d} failed") for index in range(20)] == sorted(
        received.index(f"tick {index:03d} failed") for index in range(20))
    assert not Delivery.objects.filter(status=Delivery.Status.PENDING).exists()
    assert FOLD_MAX_CHARS < 20 * 1000  # the test does cross the limit


# ------------------------------------------------------------------------------------------------------- priorities


def test_a_critical_message_passes_a_burst_held_by_its_fold_window(telegram):
    notify(topic="order_rejected", text="rejected 1", severity="warning")
    clock = ManualClock(timezone.now())
    Sender(clock=clock).run(budget_s=5)
    start = clock.now()
    notify(topic="order_rejected", text="rejected 2", severity="warning")  # held by the topic's window
    notify(topic="trade_opened", text="BTC/ETH opened")  # behind it, in order
    notify(topic="halt_raised", text="Halt: main\nreason: daily loss", severity="critical")
    notify(topic="halt_cleared", text="Halt cleared: main", severity="critical")

    clock.set(start + timedelta(seconds=1))
    Sender(clock=clock).run(budget_s=5)
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == [
        "rejected 1", "Halt: main", "Halt cleared: main"]  # criticals at once, in their order

    clock.set(start + timedelta(seconds=16))
    Sender(clock=clock).run(budget_s=5)
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == [
        "rejected 1", "Halt: main", "Halt cleared: main", "rejected 2", "BTC/ETH opened"]


def test_a_retrying_message_still_holds_the_critical_one_behind_it(telegram):
    """Only a fold window lets a critical message pass: a retry says the chat is failing, and the order holds."""
    telegram.force_rate_limit(1, retry_after=7, chat_id=ALERTS_CHAT_ID)
    notify(topic="trade_opened", text="BTC/ETH opened")
    notify(topic="halt_raised", text="Halt: main", severity="critical")
    clock = ManualClock(timezone.now())

    Sender(clock=clock).run(budget_s=5)

    assert _texts(telegram, ALERTS_CHAT_ID) == [] and len(_texts(telegram, ADMIN_CHAT_ID)) == 1
    clock.advance(timedelta(seconds=7))
    Sender(clock=clock).run(budget_s=5)
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == ["BTC/ETH opened", "Halt: main"]


def test_a_critical_message_does_not_wait_for_a_failed_messages_backoff(telegram):
    """After an outage the chat's oldest message waits for our backoff (up to 5 minutes); a halt raised meanwhile is
    tried at once, and once it gets through, what waited goes out right after it, in its order."""
    with telegram.outage("http_502"):
        notify(topic="trade_opened", text="BTC/ETH opened")
        notify(topic="trade_closed", text="BTC/ETH closed")
        clock = ManualClock(timezone.now())
        Sender(clock=clock, rng=random.Random(7)).run(budget_s=5)
    waiting = Delivery.objects.get(channel="telegram", target=str(ALERTS_CHAT_ID), notification__topic="trade_opened")
    assert waiting.attempts == 1 and waiting.next_attempt_at > clock.now() and not waiting.server_wait

    notify(topic="halt_raised", text="Halt: main", severity="critical")
    clock.set(timezone.now())  # the chat is back, the backoff (at least 1 s) still runs
    Sender(clock=clock).run(budget_s=5)
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == [
        "Halt: main", "BTC/ETH opened", "BTC/ETH closed"]


def test_a_critical_message_that_fails_too_keeps_the_chat_waiting(telegram):
    """The critical probe finds the chat still out: it waits for its own backoff, and nothing else is released."""
    with telegram.outage("http_502"):
        notify(topic="trade_opened", text="BTC/ETH opened")
        clock = ManualClock(timezone.now())
        Sender(clock=clock).run(budget_s=5)
        notify(topic="halt_raised", text="Halt: main", severity="critical")
        clock.set(timezone.now())
        Sender(clock=clock).run(budget_s=5)
    rows = {d.notification.topic: d for d in Delivery.objects.filter(channel="telegram",
                                                                     target=str(ALERTS_CHAT_ID))}
    assert rows["halt_raised"].attempts == 1 and rows["trade_opened"].attempts == 1
    assert all(row.status == Delivery.Status.PENDING and row.next_attempt_at > clock.now() for row in rows.values())
    assert _texts(telegram, ALERTS_CHAT_ID) == []


def test_a_429_on_a_critical_message_that_passed_holds_the_older_one_too(telegram):
    """The critical message passed a failed one's backoff and Telegram answered 429 (retry after 60 s): the chat's
    wait is Telegram's, so the older message, whose own backoff ends sooner, waits for it too (sent meanwhile, it
    would be refused again, and flooding a chat that asked us to wait lengthens the wait)."""
    with telegram.outage("http_502"):
        notify(topic="trade_opened", text="BTC/ETH opened")
        clock = ManualClock(timezone.now())
        Sender(clock=clock, rng=random.Random(7)).run(budget_s=5)
    waiting = Delivery.objects.get(channel="telegram", target=str(ALERTS_CHAT_ID), notification__topic="trade_opened")
    notify(topic="halt_raised", text="Halt: main", severity="critical")
    clock.set(timezone.now())  # the old message's backoff (at least 1 s) still runs
    assert waiting.next_attempt_at > clock.now()
    telegram.force_rate_limit(retry_after=60, chat_id=ALERTS_CHAT_ID)
    Sender(clock=clock).run(budget_s=5)
    halt = Delivery.objects.get(channel="telegram", target=str(ALERTS_CHAT_ID), notification__topic="halt_raised")
    assert halt.server_wait and halt.next_attempt_at == clock.now() + timedelta(seconds=60)

    clock.set(waiting.next_attempt_at + timedelta(seconds=1))  # the old message's backoff is over, Telegram's isn't
    assert clock.now() < halt.next_attempt_at
    before = len(telegram.requests_to("sendMessage"))
    Sender(clock=clock).run(budget_s=5)
    assert [r.params for r in telegram.requests_to("sendMessage")[before:]
            if str(r.params.get("chat_id")) == str(ALERTS_CHAT_ID)] == []

    clock.set(halt.next_attempt_at)
    Sender(clock=clock).run(budget_s=5)
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == ["BTC/ETH opened", "Halt: main"]


def test_a_run_waits_for_a_fold_window_that_ends_within_its_budget(telegram, settings):
    settings.NOTIFY_FOLD_WINDOW_S = 1.0
    notify(topic="order_rejected", text="rejected 1", severity="warning")
    Sender().run(budget_s=5)
    notify(topic="order_rejected", text="rejected 2", severity="warning")

    started = time.monotonic()
    Sender().run(budget_s=0.3)  # the window ends after the budget: left to the next run
    assert time.monotonic() - started < 0.3 + 0.5 and len(_texts(telegram, ALERTS_CHAT_ID)) == 1

    Sender().run(budget_s=5)
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == ["rejected 1", "rejected 2"]
    first, second = telegram.delivered(ALERTS_CHAT_ID)
    assert second.time - first.time >= 0.9


def test_the_celery_task_does_not_sleep_for_a_fold_window(telegram, settings):
    """Its worker process serves the guard's queue too: a held (non-critical) message is left to beat's sweep."""
    from notifications.tasks import send_notifications

    settings.NOTIFY_FOLD_WINDOW_S = 3.0
    notify(topic="order_rejected", text="rejected 1", severity="warning")
    send_notifications()
    notify(topic="order_rejected", text="rejected 2", severity="warning")
    started = time.monotonic()
    send_notifications()
    assert time.monotonic() - started < 1.5 and len(_texts(telegram, ALERTS_CHAT_ID)) == 1


def test_the_celery_task_schedules_a_send_for_when_telegrams_retry_after_ends(telegram, settings, monkeypatch):
    """The task does not sleep, but a retry due in a few seconds is not left to beat's 30 s sweep either: a send
    is scheduled for then (Telegram's retry_after), and none when nothing is left."""
    from notifications import tasks

    settings.NOTIFICATIONS_NUDGE = True
    scheduled = []
    monkeypatch.setattr(tasks.send_notifications, "apply_async", lambda **options: scheduled.append(options))
    telegram.force_rate_limit(1, retry_after=3, chat_id=ALERTS_CHAT_ID)
    notify(topic="guard_halt", text="halted", severity="critical")
    result = tasks.send_notifications()
    assert result["retried"] == 1 and len(scheduled) == 1
    assert 2.0 <= scheduled[0]["countdown"] <= 3.0
    time.sleep(scheduled[0]["countdown"])
    result = tasks.send_notifications()
    assert result["sent"] >= 1 and len(scheduled) == 1  # delivered; nothing more to schedule
    assert [t.splitlines()[1] for t in _texts(telegram, ALERTS_CHAT_ID)] == ["halted"]


def test_a_run_waits_for_a_retry_that_comes_due_within_its_budget(telegram):
    telegram.force_rate_limit(1, retry_after=1, chat_id=ALERTS_CHAT_ID)
    notify(topic="trade_opened", text="BTC/ETH opened")

    report = Sender().run(budget_s=5)

    assert report.retried == 1 and report.sent == 2  # the chat after its retry_after, and the log
    assert [text.splitlines()[1] for text in _texts(telegram, ALERTS_CHAT_ID)] == ["BTC/ETH opened"]


# ------------------------------------------------------------------------------------------------------- pacing


def test_the_per_chat_spacing_holds_across_runs(telegram, settings):
    """Every commit's nudge starts a new sender: the second must wait for the first one's send, not get a 429."""
    settings.TELEGRAM_MIN_INTERVAL_S = 1.0
    telegram.set_rate_limits(enabled=True)  # 1 a second per chat
    notify(topic="trade_opened", text="one")
    Sender().run(budget_s=5)
    notify(topic="trade_closed", text="two")

    report = Sender().run(budget_s=5)

    assert report.retried == 0 and not [r for r in telegram.requests_to("sendMessage") if r.status == 429]
    first, second = telegram.delivered(ALERTS_CHAT_ID)
    assert second.time - first.time >= 1.0


def test_the_parts_of_a_long_message_are_spaced_like_messages(telegram, settings):
    settings.TELEGRAM_MIN_INTERVAL_S = 1.0
    telegram.set_rate_limits(enabled=True)
    notify(topic="daily_summary", text="\n".join("y" * 70 for _ in range(120)))  # three parts

    report = Sender().run(budget_s=10)

    assert report.retried == 0 and not [r for r in telegram.requests_to("sendMessage") if r.status == 429]
    parts = telegram.delivered(ALERTS_CHAT_ID)
    assert [p.plain_text.splitlines()[0][-5:] for p in parts] == ["(1/3)", "(2/3)", "(3/3)"]
    assert all(later.time - earlier.time >= 1.0 for earlier, later in itertools.pairwise(parts))
