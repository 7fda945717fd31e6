"""django-axes' ``axes_reset``, in one transaction with its audit entry: it lets locked-out logins in again."""

from axes.management.commands import axes_reset

from core.command_audit import AuditedCommand


class Command(AuditedCommand, axes_reset.Command):
    audit_what = "login lock-outs reset"
    counted_model = "axes.AccessAttempt"
