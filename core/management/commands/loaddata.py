"""Django's ``loaddata``, in one transaction with its audit entry: a fixture writes rows of any table (users and
their permissions, accounts, trades), by primary key over what is stored."""

from django.core.management.commands import loaddata

from core.command_audit import AuditedCommand


class Command(AuditedCommand, loaddata.Command):
    audit_what = "fixtures loaded"

    def audit_details(self) -> dict:
        loaded = getattr(self, "loaded_object_count", 0)
        self.audit_what = f"{loaded} object(s) loaded from {getattr(self, 'fixture_count', 0)} fixture(s)"
        return {"objects_loaded": loaded, "objects_in_fixtures": getattr(self, "fixture_object_count", 0)}
