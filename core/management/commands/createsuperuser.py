"""Django's ``createsuperuser``, audited: a superuser holds every permission, so who made one is on the trail."""

from django.contrib.auth.management.commands import createsuperuser

from core.command_audit import AuditedUserModel, CommandAudit


class Command(CommandAudit, createsuperuser.Command):
    def handle(self, *args, **options):
        # The questions come first and the user is created at the very end: only that step is in a transaction,
        # with the audit entry (AuditedUserModel).
        model = self.UserModel
        self.UserModel = AuditedUserModel(model, lambda user: self.audit(
            args, options, details={"user": user.get_username()}, action="add_user", target=user,
            summary=f"superuser {user.get_username()} created by manage.py createsuperuser"))
        try:
            return super().handle(*args, **options)
        finally:
            self.UserModel = model
