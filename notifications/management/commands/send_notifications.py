"""``manage.py send_notifications``: drain the outbox once; exit 1 if anything is left failing."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from notifications.sender import deliveries_failing, notifications_send


class Command(BaseCommand):
    help = "Send the notifications that are due, once. Exits non-zero if a delivery is left failing."

    def add_arguments(self, parser):
        parser.add_argument("--budget", type=float, default=60.0, help="seconds to keep sending (default 60)")

    def handle(self, *args, budget: float, **options):
        report = notifications_send(budget_s=budget)
        left = deliveries_failing()
        self.stdout.write(f"sent {report.sent}, folded {report.folded}, retried {report.retried}, gave up "
                          f"{report.failed}; left failing: {left['failed']} given up, {left['retrying']} retrying")
        for error in report.errors:
            self.stderr.write(error)
        if left["failed"] or left["retrying"]:
            raise CommandError("notifications are left failing (see the admin: Notifications > Deliveries)")
