"""The sender: drains the deliveries of the outbox.

Per destination (a chat, an address, the log) only the oldest pending delivery is ever claimed, so messages arrive
in the order they were written, and one destination that fails never holds up another. A claim is a conditional
UPDATE (status pending, no live lease) that sets ``lease_owner``/``lease_until``: of two senders, one claims a row,
the other sees no row updated and moves on, on every database. The outcome is recorded only under the same lease.

A temporary fault (outage, timeout, 5xx) waits with exponential backoff and jitter and never gives up, so an outage
of any length ends with every message delivered; a 429 waits what Telegram's ``retry_after`` says; a definite
refusal (400, 403) gives up with the reason stored. A timed-out request may have been delivered: it is retried (a
duplicate is better than a lost alert); an answered request is never sent again.

Rate control: a destination receives at most one message per ``TELEGRAM_MIN_INTERVAL_S`` from one sender (Telegram's
limit is about 1 a second per chat, 30 a second overall), and a topic already sent to a destination within
``NOTIFY_FOLD_WINDOW_S`` waits for the window to end; the messages of that topic written within the window after it
then go out folded into one, with their count and first lines ("+12 more"). A backlog older than that (after an
outage) goes out message by message.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min, Q

from core.clock import Clock, WallClock
from notifications.channels import EmailChannel, LogChannel, Message, Outcome, TelegramChannel
from notifications.models import Delivery, Notification

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)  # far above a send's worst case (parts x 10 s timeout)
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0  # an outage's end is noticed within 5 minutes
FOLDING_CHANNELS = (Delivery.Channel.TELEGRAM, Delivery.Channel.EMAIL)
GLOBAL_PER_SECOND = 30
FOLD_MAX = 500  # messages folded into one at most (their first lines make a message of ~40 Telegram parts at worst)


def backoff_s(attempts: int, *, rng: random.Random | None = None) -> float:
    """Exponential with "equal jitter": half the step fixed, half random, so senders that failed together spread."""
    step = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)


@dataclass
class SendReport:
    sent: int = 0
    folded: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class _Pacer:
    """Per destination and overall spacing of sends in this process (time.monotonic)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], float] = {}
        self.recent: deque[float] = deque()

    def wait_s(self, delivery: Delivery) -> float:
        if delivery.channel != Delivery.Channel.TELEGRAM:
            return 0.0
        now = time.monotonic()
        interval = float(getattr(settings, "TELEGRAM_MIN_INTERVAL_S", 1.0))
        waits = [self.last.get((delivery.channel, delivery.target), -1e9) + interval - now]
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        if len(self.recent) >= GLOBAL_PER_SECOND:
            waits.append(self.recent[0] + 1.0 - now)
        return max(0.0, *waits)

    def mark(self, delivery: Delivery) -> None:
        if delivery.channel == Delivery.Channel.TELEGRAM:
            now = time.monotonic()
            self.last[(delivery.channel, delivery.target)] = now
            self.recent.append(now)


def _lease_free(now: datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def _due_heads(now: datetime) -> list[Delivery]:
    """The oldest pending delivery of every destination, if it is due and nobody holds it."""
    heads = (Delivery.objects.filter(status=Delivery.Status.PENDING).values("channel", "target")
             .annotate(head=Min("id")).values_list("head", flat=True))  # fmt: skip
    return list(
        Delivery.objects.filter(id__in=list(heads), next_attempt_at__lte=now).filter(_lease_free(now))
        .select_related("notification").order_by("id")
    )


def _claim(ids: list[int], owner: str, now: datetime) -> list[int]:
    """The ids of ``ids`` this sender now holds (one conditional UPDATE each: a row goes to one sender only)."""
    won = []
    for pk in ids:
        if Delivery.objects.filter(pk=pk, status=Delivery.Status.PENDING).filter(_lease_free(now)).update(
                lease_owner=owner, lease_until=now + LEASE):
            won.append(pk)
    return won


def _fold_window() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "NOTIFY_FOLD_WINDOW_S", 15)))


def _quiet_until(head: Delivery, now: datetime) -> datetime | None:
    """When the head's topic was sent to its destination within the fold window: the window's end."""
    if head.channel not in FOLDING_CHANNELS:
        return None
    window = _fold_window()
    last = (Delivery.objects.filter(channel=head.channel, target=head.target, status=Delivery.Status.SENT,
                                    notification__topic=head.notification.topic, sent_at__gt=now - window)
            .aggregate(last=Max("sent_at"))["last"])  # fmt: skip
    return last + window if last is not None else None


def _followers(head: Delivery, now: datetime) -> list[int]:
    """Pending deliveries of the head's topic to the same destination written within the fold window after it (a
    burst): they go out folded into the head's message."""
    window = _fold_window()
    if head.channel not in FOLDING_CHANNELS or window <= timedelta(0):
        return []
    return list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, channel=head.channel, target=head.target,
                                id__gt=head.id, notification__topic=head.notification.topic,
                                created_at__lte=head.created_at + window)
        .filter(_lease_free(now)).order_by("id").values_list("id", flat=True)[:FOLD_MAX]
    )  # fmt: skip


def folded_text(head: Notification, others: list[Notification]) -> str:
    """The head's text, then the count and the first line of every folded message (repeats counted, not listed)."""
    if not others:
        return head.text
    counts: dict[str, int] = {}
    for note in others:
        line = (note.text.splitlines() or [""])[0][:300]
        counts[line] = counts.get(line, 0) + 1
    lines = [line if count == 1 else f"{line} (x{count})" for line, count in counts.items()]
    return f"{head.text}\n\n+{len(others)} more {head.topic!r}:\n" + "\n".join(lines)


class Sender:
    """One sender: ``run`` drains what is due. The channels are built once and reused for its whole run."""

    def __init__(self, *, clock: Clock | None = None, owner: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.clock = clock or WallClock()
        self.owner = owner or f"sender:{uuid.uuid4().hex[:16]}"
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.pacer = _Pacer()
        self.report = SendReport()
        self._channels: dict[str, object] = {}

    def channel(self, name: str):
        if name not in self._channels:
            self._channels[name] = {Delivery.Channel.TELEGRAM: TelegramChannel, Delivery.Channel.EMAIL: EmailChannel,
                                    Delivery.Channel.LOG: LogChannel}[name]()  # fmt: skip
        return self._channels[name]

    def close(self) -> None:
        for channel in self._channels.values():
            if isinstance(channel, TelegramChannel):
                channel.close()

    def run(self, *, budget_s: float = 25.0) -> SendReport:
        """Send until nothing is due or ``budget_s`` has passed (wall time); waits only for the per-chat spacing."""
        deadline = time.monotonic() + budget_s
        try:
            while time.monotonic() < deadline:
                progressed, wait = self._pass()
                if progressed:
                    continue
                if wait is None:
                    break
                self.sleep(min(wait, max(0.0, deadline - time.monotonic())))
        finally:
            self.close()
        return self.report

    def _pass(self) -> tuple[bool, float | None]:
        progressed, wait = False, None
        for head in _due_heads(self.clock.now()):
            pause = self.pacer.wait_s(head)
            if pause > 0:
                wait = pause if wait is None else min(wait, pause)
                continue
            progressed = self.send_head(head) or progressed
        return progressed, wait

    def send_head(self, head: Delivery) -> bool:
        now = self.clock.now()
        quiet = _quiet_until(head, now)
        if quiet is not None and quiet > now:
            Delivery.objects.filter(pk=head.pk, status=Delivery.Status.PENDING).filter(_lease_free(now)).update(
                next_attempt_at=quiet)
            return False
        if not _claim([head.pk], self.owner, now):
            return False  # another sender has it
        follower_ids = _claim(_followers(head, now), self.owner, now)
        others = list(Notification.objects.filter(deliveries__id__in=follower_ids).order_by("deliveries__id"))
        note = head.notification
        message = Message(topic=note.topic, severity=note.severity, text=folded_text(note, others))
        try:
            outcome = self.channel(head.channel).send(head.target, message, parts_sent=head.parts_sent)
        except Exception as exc:  # one broken channel must not stop the others; the row retries
            logger.exception("notification channel %s failed", head.channel)
            outcome = Outcome("retry", f"{type(exc).__name__} in the {head.channel} channel")
        self.pacer.mark(head)
        self._record(head, follower_ids, outcome)
        return True

    @transaction.atomic
    def _record(self, head: Delivery, follower_ids: list[int], outcome: Outcome) -> None:
        now = self.clock.now()
        mine = Delivery.objects.filter(lease_owner=self.owner)
        attempts = head.attempts + 1
        release = {"lease_owner": "", "lease_until": None}
        if outcome.kind == "sent":
            mine.filter(pk=head.pk).update(status=Delivery.Status.SENT, attempts=attempts, sent_at=now,
                                           parts_sent=outcome.parts_sent, last_error="", **release)
            folded = mine.filter(pk__in=follower_ids).update(status=Delivery.Status.FOLDED, folded_into=head,
                                                             sent_at=now, **release)
            self.report.sent += 1
            self.report.folded += folded
        else:
            values = {"attempts": attempts, "last_error": outcome.reason[:1000], "parts_sent": outcome.parts_sent,
                      **release}
            if outcome.kind == "give_up":
                values.update(status=Delivery.Status.FAILED)
                self.report.failed += 1
                self.report.errors.append(f"{head.channel}:{head.target}: {outcome.reason}")
            else:
                wait = outcome.retry_after_s if outcome.retry_after_s is not None else backoff_s(attempts,
                                                                                                  rng=self.rng)
                values.update(next_attempt_at=now + timedelta(seconds=wait))
                self.report.retried += 1
            mine.filter(pk=head.pk).update(**values)
            mine.filter(pk__in=follower_ids).update(**release)  # they go out with a later head
        _notifications_settle([head.notification_id, *Delivery.objects.filter(pk__in=follower_ids)
                              .values_list("notification_id", flat=True)])  # fmt: skip


def _notifications_settle(notification_ids: list[int]) -> None:
    """A notification's own status follows its deliveries: sent once none is pending (failed if one gave up)."""
    for note in Notification.objects.filter(pk__in=notification_ids):
        rows = list(note.deliveries.values_list("status", "attempts", "last_error", "sent_at"))
        note.attempts = min(max((row[1] for row in rows), default=0), 32767)
        note.last_error = next((row[2] for row in rows if row[2]), "")[:1000]
        if rows and all(row[0] != Delivery.Status.PENDING for row in rows):
            failed = any(row[0] == Delivery.Status.FAILED for row in rows)
            note.status = Notification.Status.FAILED if failed else Notification.Status.SENT
            note.sent_at = max((row[3] for row in rows if row[3] is not None), default=None)
        note.save(update_fields=["attempts", "last_error", "status", "sent_at"])


def notifications_send(*, budget_s: float = 25.0, clock: Clock | None = None) -> SendReport:
    """Drain the outbox once (what the task, beat's sweep and ``manage.py send_notifications`` run)."""
    return Sender(clock=clock).run(budget_s=budget_s)


def deliveries_failing() -> dict[str, int]:
    """What is left failing: deliveries given up, and pending ones that have failed at least once."""
    return {
        "failed": Delivery.objects.filter(status=Delivery.Status.FAILED).count(),
        "retrying": Delivery.objects.filter(status=Delivery.Status.PENDING, attempts__gt=0).count(),
    }
