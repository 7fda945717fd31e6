"""The sender: drains the deliveries of the outbox.

Per destination (a chat, an address, the log) messages go out one at a time, in the order they were written, and one
destination that fails never holds up another. The one exception to the order: a critical message passes the
non-critical ones that wait for their topic's fold window (``notifications.folding``) or for our backoff after a
failed try, so a halt is never 15 s late behind a burst of rejected orders nor minutes late behind a message that
failed while the chat was out (it is the probe: sent, it releases what waited); each severity class (critical, the
rest) keeps its own order. A claim is a
conditional UPDATE (status pending, no live lease) that sets ``lease_owner``/``lease_until``: of two senders, one
claims a row, the other sees no row updated and moves on, on every database. The outcome is recorded only under the
same lease.

A temporary fault (outage, timeout, 5xx) waits with exponential backoff and jitter and never gives up, so an outage
of any length ends with every message delivered; a 429 waits what Telegram's ``retry_after`` says; a definite
refusal (400, 403) gives up with the reason stored. A timed-out request (or one answered 5xx) may have been
delivered: it is retried (a duplicate is better than a lost alert), marked in its header as possibly a repeat, as is
a message taken over from a sender that died before it could record the answer; an answered request is never sent
again.

Rate control: a chat receives at most one message (or part of a split message) per ``TELEGRAM_MIN_INTERVAL_S``
(Telegram's limit is about 1 a second per chat, 30 a second overall). Every commit's nudge starts a new sender, so a
run starts from the chats' last sends as the database has them, not from nothing. A run keeps going, sleeping, until
the end of a fold window or a retry's wait when that comes within its budget, so a held message goes out then and
not at the next nudge or sweep.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min, Q

from core.clock import Clock, ManualClock, WallClock
from notifications.channels import EmailChannel, LogChannel, Message, Outcome, TelegramChannel
from notifications.folding import folded_severity, folded_text, followers, lease_free, quiet_until
from notifications.models import Delivery, Notification
from notifications.services import notify_destination_lost

logger = logging.getLogger(__name__)

# A claim's hold, renewed after each part of a split message: above one part's worst case (1 s of spacing, a 10 s
# timeout), short enough that the chats of a sender killed mid-send are taken over within half a minute.
LEASE = timedelta(seconds=30)
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0  # an outage's end is noticed within 5 minutes
GLOBAL_PER_SECOND = 30


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
    # Seconds until something left pending comes due (a retry, a fold window, a chat's spacing); None: nothing.
    next_due_s: float | None = None


class _Pacer:
    """Per chat and overall spacing of Telegram sends (on time.monotonic). Each part of a split message counts: to
    Telegram it is a message."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.recent: deque[float] = deque()

    @staticmethod
    def interval_s() -> float:
        return float(getattr(settings, "TELEGRAM_MIN_INTERVAL_S", 1.0))

    def load(self, now: datetime) -> None:
        """The chats' last sends by earlier runs (their deliveries' newest ``sent_at``, recorded after the send was
        answered, so never earlier than Telegram saw it): a run that starts right after another must not send at
        once to the same chat."""
        interval = self.interval_s()
        if interval <= 0:
            return
        rows = (Delivery.objects.filter(channel=Delivery.Channel.TELEGRAM, status=Delivery.Status.SENT,
                                        sent_at__gt=now - timedelta(seconds=interval))
                .values("target").annotate(last=Max("sent_at")))  # fmt: skip
        mono = time.monotonic()
        for row in rows:
            ago = max(0.0, (now - row["last"]).total_seconds())  # a send "in the future" (clock skew): a full wait
            self.last[row["target"]] = max(self.last.get(row["target"], -math.inf), mono - ago)

    def wait_s(self, channel: str, target: str) -> float:
        if channel != Delivery.Channel.TELEGRAM:
            return 0.0
        now = time.monotonic()
        waits = [self.last.get(target, -math.inf) + self.interval_s() - now]
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        if len(self.recent) >= GLOBAL_PER_SECOND:
            waits.append(self.recent[0] + 1.0 - now)
        return max(0.0, *waits)

    def mark(self, target: str) -> None:
        now = time.monotonic()
        self.last[target] = now
        self.recent.append(now)


class _PacedTelegram(TelegramChannel):
    """The Telegram channel with every request (each part of a split message) spaced by the pacer: parts sent back
    to back would get a 429 from the second on."""

    def __init__(self, pacer: _Pacer, sleep: Callable[[float], None]):
        super().__init__()
        self._pacer = pacer
        self._sleep = sleep

    def _send_one(self, chat_id: str, text: str) -> Outcome:
        pause = self._pacer.wait_s(Delivery.Channel.TELEGRAM, chat_id)
        if pause > 0:
            self._sleep(pause)
        try:
            return super()._send_one(chat_id, text)
        finally:
            self._pacer.mark(chat_id)  # answered or not, it may have counted


def _claim(ids: list[int], owner: str, now: datetime) -> list[int]:
    """The ids of ``ids`` this sender now holds (one conditional UPDATE each: a row goes to one sender only)."""
    won = []
    for pk in ids:
        if Delivery.objects.filter(pk=pk, status=Delivery.Status.PENDING).filter(lease_free(now)).update(
                lease_owner=owner, lease_until=now + LEASE):
            won.append(pk)
    return won


def _claim_head(head: Delivery, owner: str, now: datetime) -> bool:
    """Claim ``head`` only as it was read: due, and not tried since (its attempts, parts sent and possible delivery
    unchanged). Another sender may have tried it between this sender's read of the queue and now (a timeout after
    Telegram delivered it, a 429, a part that failed): the stale copy would go out at once, unmarked as a possible
    repeat, from its first part and before the retry's wait. Left alone, the next pass reads it again."""
    return bool(Delivery.objects.filter(pk=head.pk, status=Delivery.Status.PENDING, attempts=head.attempts,
                                        parts_sent=head.parts_sent, maybe_sent=head.maybe_sent,
                                        next_attempt_at__lte=now)
                .filter(lease_free(now)).update(lease_owner=owner, lease_until=now + LEASE))  # fmt: skip


def _queue_heads() -> list[tuple[Delivery, Delivery | None]]:
    """Per destination, oldest first: its oldest pending delivery, and its oldest pending critical one (None when
    it has none; the same row when the oldest is critical)."""
    rows = (Delivery.objects.filter(status=Delivery.Status.PENDING)
            .values("channel", "target", "notification__severity").annotate(head=Min("id")))  # fmt: skip
    firsts: dict[tuple[str, str], int] = {}
    criticals: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["channel"], row["target"])
        firsts[key] = min(firsts.get(key, row["head"]), row["head"])
        if row["notification__severity"] == Notification.Severity.CRITICAL:
            criticals[key] = row["head"]
    by_id = Delivery.objects.select_related("notification").in_bulk([*firsts.values(), *criticals.values()])
    return [(by_id[pk], by_id.get(criticals.get(key, 0))) for key, pk in sorted(firsts.items(), key=lambda kv: kv[1])
            if pk in by_id]  # fmt: skip


def _free(delivery: Delivery, now: datetime) -> bool:
    return delivery.lease_until is None or delivery.lease_until < now


def _pick(first: Delivery, critical: Delivery | None, now: datetime) -> Delivery | None:
    """What a destination sends now, if anything: its oldest pending delivery when due; when that one waits for its
    topic's fold window or for our own backoff after a failed try, the oldest critical one instead (a halt must not
    wait 15 s behind an info burst, nor up to 5 minutes for a failed message's next try: the critical message is
    itself the probe of whether the destination is back). The server's own wait (Telegram's 429 retry_after) and
    another sender holding the oldest hold the whole destination, critical messages included."""
    if not _free(first, now):
        return None
    if critical is not None and critical.server_wait and critical.next_attempt_at > now:
        return None  # a critical message that passed got Telegram's 429: the wait is the chat's, not the message's
    quiet = quiet_until(first, now)
    if quiet is None or quiet <= now:
        if first.next_attempt_at <= now:
            return first
        return critical if not first.server_wait and _may_pass(first, critical, now) else None
    # Held by the window: the wait is stored so that every sender (and run()'s sleep) sees when it ends; a longer
    # retry wait already there is kept.
    Delivery.objects.filter(pk=first.pk, status=Delivery.Status.PENDING, next_attempt_at__lt=quiet).filter(
        lease_free(now)).update(next_attempt_at=quiet)
    return critical if _may_pass(first, critical, now) else None


def _may_pass(first: Delivery, critical: Delivery | None, now: datetime) -> bool:
    return (critical is not None and critical.pk != first.pk and critical.next_attempt_at <= now
            and _free(critical, now))


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
            factories = {Delivery.Channel.TELEGRAM: lambda: _PacedTelegram(self.pacer, self.sleep),
                         Delivery.Channel.EMAIL: EmailChannel, Delivery.Channel.LOG: LogChannel}
            self._channels[name] = factories[name]()
        return self._channels[name]

    def close(self) -> None:
        for channel in self._channels.values():
            if isinstance(channel, TelegramChannel):
                channel.close()

    def run(self, *, budget_s: float = 25.0, wait_for_due: bool = True) -> SendReport:
        """Send until nothing more can go out within ``budget_s`` (wall time). Between sends it sleeps for the
        per-chat spacing, and (``wait_for_due``) for the next fold window's end or retry time when that comes within
        the budget. The Celery task doesn't wait for those: its worker process serves other queues (the guard's),
        and beat's sweep every 30 s sends them; a critical message never waits for a fold window anyway."""
        deadline = time.monotonic() + budget_s
        try:
            self.pacer.load(self.clock.now())
            while (left := deadline - time.monotonic()) > 0:
                progressed, wait = self._pass()
                if progressed:
                    continue
                due = self._next_due_s()
                self.report.next_due_s = min((w for w in (wait, due) if w is not None), default=None)
                waits = [w for w in (wait, due if wait_for_due else None) if w is not None]
                if not waits or min(waits) > left:
                    break  # the next nudge or beat's sweep takes it from here
                self.sleep(min(waits))
        finally:
            self.close()
        return self.report

    def _next_due_s(self) -> float | None:
        """Seconds until the earliest pending delivery nobody holds comes due (a fold window's end, a retry)."""
        if isinstance(self.clock, ManualClock):
            return None  # a clock that stands still (tests, a replay) never brings that moment nearer
        now = self.clock.now()
        due = (Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__gt=now)
               .filter(lease_free(now)).aggregate(due=Min("next_attempt_at"))["due"])  # fmt: skip
        return (due - now).total_seconds() if due is not None else None

    def _pass(self) -> tuple[bool, float | None]:
        progressed, wait = False, None
        for first, critical in _queue_heads():
            head = _pick(first, critical, self.clock.now())
            if head is None:
                continue
            pause = self.pacer.wait_s(head.channel, head.target)
            if pause > 0:
                wait = pause if wait is None else min(wait, pause)
                continue
            progressed = self.send_head(head) or progressed
        return progressed, wait

    def send_head(self, head: Delivery) -> bool:
        """Claim ``head`` and its topic's burst, send them as one message and record the outcome."""
        now = self.clock.now()
        if not _claim_head(head, self.owner, now):
            return False  # another sender has it, or tried it since this one read it
        candidates = followers(head, now)
        repeat = _maybe_sent_before(head, candidates)  # read before the claim overwrites a dead sender's lease
        follower_ids = _claim(candidates, self.owner, now)
        others = list(Notification.objects.filter(deliveries__id__in=follower_ids).order_by("deliveries__id"))
        note = head.notification
        message = Message(topic=note.topic, severity=folded_severity(note, others), text=folded_text(note, others),
                          repeat=repeat)
        try:
            outcome = self.channel(head.channel).send(head.target, message, parts_sent=head.parts_sent,
                                                      progress=partial(self._parts_delivered, head.pk))
        except Exception as exc:  # one broken channel must not stop the others; the row retries
            logger.exception("notification channel %s failed", head.channel)
            # Raised anywhere, the task's soft time limit too, perhaps while a part's answer was read: the retry goes
            # on after the parts already stored as delivered, and says the part cut short may have arrived.
            delivered = Delivery.objects.filter(pk=head.pk, lease_owner=self.owner).values_list("parts_sent",
                                                                                               flat=True).first()
            outcome = Outcome("retry", f"{type(exc).__name__} in the {head.channel} channel",
                              parts_sent=head.parts_sent if delivered is None else delivered, maybe_delivered=True)
        self._record(head, follower_ids, outcome, repeat=repeat)
        return True

    def _parts_delivered(self, delivery_id: int, parts: int) -> None:
        """Stored at once (its own commit): a sender killed before the next part resumes after these. The lease of
        the message (its head and the deliveries folded into it) is renewed for the next part."""
        mine = Delivery.objects.filter(lease_owner=self.owner)
        mine.filter(pk=delivery_id).update(parts_sent=parts)
        mine.update(lease_until=self.clock.now() + LEASE)

    @transaction.atomic
    def _record(self, head: Delivery, follower_ids: list[int], outcome: Outcome, *, repeat: bool = False) -> None:
        now = self.clock.now()
        mine = Delivery.objects.filter(lease_owner=self.owner)
        attempts = head.attempts + 1
        release = {"lease_owner": "", "lease_until": None}
        if outcome.kind == "sent":
            # A sent message's reason is a note (a group upgraded to a supergroup: the setting to fix), else empty.
            mine.filter(pk=head.pk).update(status=Delivery.Status.SENT, attempts=attempts, sent_at=now,
                                           parts_sent=outcome.parts_sent, last_error=outcome.reason[:1000],
                                           **release)
            folded = mine.filter(pk__in=follower_ids).update(status=Delivery.Status.FOLDED, folded_into=head,
                                                             sent_at=now, **release)
            self.report.sent += 1
            self.report.folded += folded
            # The destination answers again: what waits for our backoff after an earlier failure goes out now, in
            # its order, instead of up to 5 minutes later (the server's own wait still holds).
            Delivery.objects.filter(channel=head.channel, target=head.target, status=Delivery.Status.PENDING,
                                    attempts__gt=0, server_wait=False, next_attempt_at__gt=now).update(
                next_attempt_at=now)
        else:
            values = {"attempts": attempts, "last_error": outcome.reason[:1000], "parts_sent": outcome.parts_sent,
                      "maybe_sent": repeat or outcome.maybe_delivered, **release}
            if outcome.kind == "give_up":
                values.update(status=Delivery.Status.FAILED)
                self.report.failed += 1
                self.report.errors.append(f"{head.channel}:{head.target}: {outcome.reason}")
                # Loud: nobody reads the task's result; /health/ counts these and the admin sends them again.
                logger.error("notification %s to %s:%s gave up after %s attempt(s): %s (admin: Deliveries, "
                             "'Send again' once the destination is fixed)", head.notification_id, head.channel,
                             head.target, attempts, outcome.reason)
                if outcome.destination_lost:
                    notify_destination_lost(head.channel, head.target, outcome.reason)
            else:
                wait = outcome.retry_after_s if outcome.retry_after_s is not None else backoff_s(attempts,
                                                                                                  rng=self.rng)
                values.update(next_attempt_at=now + timedelta(seconds=wait),
                              server_wait=outcome.retry_after_s is not None)
                self.report.retried += 1
            mine.filter(pk=head.pk).update(**values)
            # They go out with a later head, marked as the head is when this message may have arrived.
            mine.filter(pk__in=follower_ids).update(**release, **({"maybe_sent": True} if outcome.maybe_delivered
                                                                  else {}))
        _notifications_settle([head.notification_id, *Delivery.objects.filter(pk__in=follower_ids)
                              .values_list("notification_id", flat=True)])  # fmt: skip


def _maybe_sent_before(head: Delivery, follower_ids: list[int]) -> bool:
    """Whether an earlier try of this message may have arrived: one of its deliveries timed out after its request
    went out, or was left by a sender that died holding it (a lease owner that is still set: the lease ran out before
    the outcome was recorded, and the message may have been sent)."""
    if head.maybe_sent or head.lease_owner:
        return True
    return Delivery.objects.filter(pk__in=follower_ids).filter(Q(maybe_sent=True) | ~Q(lease_owner="")).exists()


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


def notifications_send(*, budget_s: float = 25.0, clock: Clock | None = None, wait_for_due: bool = True
                       ) -> SendReport:
    """Drain the outbox once (what the task, beat's sweep and ``manage.py send_notifications`` run)."""
    return Sender(clock=clock).run(budget_s=budget_s, wait_for_due=wait_for_due)


def deliveries_failing(*, failed_since: datetime | None = None, retrying_before: datetime | None = None
                       ) -> dict[str, int]:
    """What is left failing: deliveries given up (made since ``failed_since``), and pending ones that have failed
    at least once (made before ``retrying_before``: retrying for a while)."""
    failed = Delivery.objects.filter(status=Delivery.Status.FAILED)
    retrying = Delivery.objects.filter(status=Delivery.Status.PENDING, attempts__gt=0)
    if failed_since is not None:
        failed = failed.filter(created_at__gte=failed_since)
    if retrying_before is not None:
        retrying = retrying.filter(created_at__lt=retrying_before)
    return {"failed": failed.count(), "retrying": retrying.count()}
