"""Django's ``clearsessions``, in one transaction with its audit entry (expired sessions only: no one is logged out)."""

from django.contrib.sessions.management.commands import clearsessions

from core.command_audit import AuditedCommand


class Command(AuditedCommand, clearsessions.Command):
    audit_what = "expired sessions deleted"
    counted_model = "sessions.Session"
