"""Notification tasks: thin wrappers that call the sender."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from notifications.sender import notifications_send

logger = logging.getLogger(__name__)

# A retry (Telegram's retry_after, the backoff) or a fold window that ends sooner than this gets a send of its own
# at that moment instead of waiting for beat's next 30 s sweep.
FOLLOW_UP_WITHIN_S = 25.0


# Idempotent (a delivery is claimed under a lease and recorded once), so a redelivery after a crash does no harm.
@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def send_notifications() -> dict:
    """Send what is due (nudged after each notification's commit, and swept by beat every 30 s); what comes due
    within ``FOLLOW_UP_WITHIN_S`` is sent by a task scheduled for then."""
    report = notifications_send(budget_s=25.0, wait_for_due=False)  # no sleeping on a worker the guard shares
    if report.next_due_s is not None and report.next_due_s <= FOLLOW_UP_WITHIN_S and _follow_ups_on():
        try:
            send_notifications.apply_async(countdown=max(report.next_due_s, 0.5), retry=False)
        except Exception:  # a broker that is down: beat's sweep sends it
            logger.warning("could not schedule the next notification send (beat's sweep will)", exc_info=True)
    return {"sent": report.sent, "folded": report.folded, "retried": report.retried, "failed": report.failed,
            "next_due_s": report.next_due_s}


def _follow_ups_on() -> bool:
    """Not where nudges are off (tests), nor with eager tasks: a follow-up would run at once, in this call."""
    return getattr(settings, "NOTIFICATIONS_NUDGE", True) and not getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)
