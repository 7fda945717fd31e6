from django.core.management.base import BaseCommand

from core.audit import audit_record
from core.commands import shell_operator
from statarb_site.roles import roles_sync


class Command(BaseCommand):
    help = "Create the role groups (viewer, reporting, trader, admin) and set their permissions (idempotent)."

    def handle(self, *args, **options):
        counts = roles_sync()
        audit_record(action="roles_sync", channel="command", actor_label=shell_operator("setup_roles"),
                     summary="role groups set: " + ", ".join(f"{r} ({n} permissions)" for r, n in counts.items()))
        for role, count in counts.items():
            self.stdout.write(f"{role}: {count} permission(s)")
