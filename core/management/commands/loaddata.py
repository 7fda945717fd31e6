"""Django's ``loaddata``, in one transaction with its audit entry: a fixture writes rows of any table (users and
their permissions, accounts, trades), by primary key over what is stored. Fixtures that hold audit entries are
refused as a whole: the trail is append-only, and a fixture would write entries by primary key over the stored
ones, rewriting who did what."""

from django.core.management.base import CommandError
from django.core.management.commands import loaddata

from core.command_audit import AuditedCommand
from core.models import AuditEntry


class _AuditEntriesRefused(Exception):
    pass


class Command(AuditedCommand, loaddata.Command):
    audit_what = "fixtures loaded"

    def handle(self, *args, **options):
        try:
            return super().handle(*args, **options)
        except _AuditEntriesRefused as refused:  # the load was rolled back with the transaction
            self.audit(args, options, details={}, action="refused",
                       summary=f"manage.py loaddata {' '.join(map(str, args))} refused: {refused}")
            raise CommandError(f"{refused}: nothing was loaded") from None

    def audit_details(self) -> dict:
        if AuditEntry in self.models:
            raise _AuditEntriesRefused("the fixtures hold audit entries (core.AuditEntry), and the audit trail is "
                                       "append-only (leave them out with --exclude core.AuditEntry)")
        loaded = getattr(self, "loaded_object_count", 0)
        self.audit_what = f"{loaded} object(s) loaded from {getattr(self, 'fixture_count', 0)} fixture(s)"
        return {"objects_loaded": loaded, "objects_in_fixtures": getattr(self, "fixture_object_count", 0),
                "models": sorted(model._meta.label for model in self.models)}
