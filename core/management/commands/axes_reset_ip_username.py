"""django-axes' ``axes_reset_ip_username``, with its audit entry: it lets locked-out logins in again."""

from axes.management.commands import axes_reset_ip_username

from core.command_audit import AuditedCommand


class Command(AuditedCommand, axes_reset_ip_username.Command):
    audit_what = "login lock-outs reset"
    counted_model = "axes.AccessAttempt"
