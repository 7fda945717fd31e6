"""django-axes' ``axes_reset_logs``, in one transaction with its audit entry: it deletes the history of logins."""

from axes.management.commands import axes_reset_logs

from core.command_audit import AuditedCommand


class Command(AuditedCommand, axes_reset_logs.Command):
    audit_what = "login history deleted"
    counted_model = "axes.AccessLog"
