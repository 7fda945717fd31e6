"""Notification tasks: thin wrappers that call the sender."""

from __future__ import annotations

from celery import shared_task

from notifications.sender import notifications_send


# Idempotent (a delivery is claimed under a lease and recorded once), so a redelivery after a crash does no harm.
@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def send_notifications() -> dict:
    """Send what is due (nudged after each notification's commit, and swept by beat every 30 s)."""
    report = notifications_send(budget_s=25.0, wait_for_due=False)  # no sleeping on a worker the guard shares
    return {"sent": report.sent, "folded": report.folded, "retried": report.retried, "failed": report.failed}
