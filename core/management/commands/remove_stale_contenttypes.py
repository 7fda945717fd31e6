"""Django's ``remove_stale_contenttypes``, audited: deleting a content type deletes its permissions, and so takes
them away from every role and user that held them."""

from django.contrib.contenttypes.management.commands import remove_stale_contenttypes

from core.command_audit import AuditedCommand


class Command(AuditedCommand, remove_stale_contenttypes.Command):
    audit_what = "stale content types deleted, with their permissions"
    counted_model = "contenttypes.ContentType"
