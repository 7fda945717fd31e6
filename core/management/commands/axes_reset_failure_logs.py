"""django-axes' ``axes_reset_failure_logs``, in one transaction with its audit entry: it deletes the history of
failed logins."""

from axes.management.commands import axes_reset_failure_logs

from core.command_audit import AuditedCommand


class Command(AuditedCommand, axes_reset_failure_logs.Command):
    audit_what = "failed-login history deleted"
    counted_model = "axes.AccessFailureLog"
