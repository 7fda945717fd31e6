"""Folding: a burst of one topic to one destination goes out as one message.

A failing tick or a flapping check can write the same topic many times a minute; one message carrying all of them
keeps the chat readable and within Telegram's one message a second. A topic sent to a destination waits
``NOTIFY_FOLD_WINDOW_S`` before its next message there, and the messages of that topic written within the window
after it then go out as one: the first in full, then the count and every other one's whole text (a daily summary or
a halt of another account says what the first does not), repeats counted once.

Critical messages are never folded and never wait for a window: each goes out whole, on its own, as soon as the
per-chat spacing allows (the sender lets them pass non-critical messages that wait for a window).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q

from notifications.models import SEVERITY_RANK, Delivery, Notification

FOLDING_CHANNELS = (Delivery.Channel.TELEGRAM, Delivery.Channel.EMAIL)
FOLD_MAX = 500  # messages folded into one at most
# The followers' text one folded message carries, about two Telegram parts (the channel splits above 4,096
# characters): a burst beyond it goes on in the topic's next message instead of one message of dozens of parts.
FOLD_MAX_CHARS = 8000


def fold_window() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "NOTIFY_FOLD_WINDOW_S", 15)))


def is_critical(delivery: Delivery) -> bool:
    return delivery.notification.severity == Notification.Severity.CRITICAL


def lease_free(now: datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def quiet_until(head: Delivery, now: datetime) -> datetime | None:
    """When the head's topic was sent to its destination within the fold window: the window's end (None for a
    critical head: it never waits)."""
    if head.channel not in FOLDING_CHANNELS or is_critical(head):
        return None
    window = fold_window()
    last = (Delivery.objects.filter(channel=head.channel, target=head.target, status=Delivery.Status.SENT,
                                    notification__topic=head.notification.topic, sent_at__gt=now - window)
            .aggregate(last=Max("sent_at"))["last"])  # fmt: skip
    return last + window if last is not None else None


def followers(head: Delivery, now: datetime) -> list[int]:
    """Pending non-critical deliveries of the head's topic to the same destination written within the fold window
    after it (a burst), as many as fit in ``FOLD_MAX_CHARS``: they go out folded into the head's message. The first
    that does not fit ends the list, so what is left keeps its order and leads the topic's next message."""
    window = fold_window()
    if head.channel not in FOLDING_CHANNELS or window <= timedelta(0) or is_critical(head):
        return []
    rows = (Delivery.objects.filter(status=Delivery.Status.PENDING, channel=head.channel, target=head.target,
                                    id__gt=head.id, notification__topic=head.notification.topic,
                                    created_at__lte=head.created_at + window)
            .exclude(notification__severity=Notification.Severity.CRITICAL).filter(lease_free(now))
            .order_by("id").values_list("id", "notification__text")[:FOLD_MAX])  # fmt: skip
    chosen, seen, size = [], set(), 0
    for pk, text in rows:
        cost = 8 if text in seen else len(text) + 2  # a repeat adds only its count
        if size + cost > FOLD_MAX_CHARS:
            break
        chosen.append(pk)
        seen.add(text)
        size += cost
    return chosen


def _counted(text: str, count: int) -> str:
    if count == 1:
        return text
    return f"{text} (x{count})" if "\n" not in text else f"(x{count}) {text}"


def folded_text(head: Notification, others: list[Notification]) -> str:
    """The head's text, then the count and the whole text of every folded message (repeats counted, not listed);
    one line each when they are one-liners, else separated by a blank line."""
    if not others:
        return head.text
    counts: dict[str, int] = {}
    for note in others:
        counts[note.text] = counts.get(note.text, 0) + 1
    entries = [_counted(text, count) for text, count in counts.items()]
    joiner = "\n" if all("\n" not in text for text in counts) else "\n\n"
    return f"{head.text}\n\n+{len(others)} more {head.topic!r}:\n" + joiner.join(entries)


def folded_severity(head: Notification, others: list[Notification]) -> str:
    """The highest severity of the folded messages (a warning folded after an info marks the message a warning)."""
    return max([head.severity, *(note.severity for note in others)], key=lambda value: SEVERITY_RANK.get(value, 0))
