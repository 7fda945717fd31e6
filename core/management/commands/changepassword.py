"""Django's ``changepassword``, audited, and the user's API tokens revoked with the change (core.tokens)."""

import getpass

from django.contrib.auth import get_user_model
from django.contrib.auth.management.commands import changepassword
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction

from core.audit import audit_record
from core.command_audit import command_arguments
from core.commands import shell_operator
from core.tokens import credentials_changed

MAX_TRIES = 3


class Command(changepassword.Command):
    """Django's command asks for the password and saves it in one ``handle``; here the questions are the same (and
    so are its messages) and only the save, with its audit entry and the revocation of the user's API tokens, is
    one transaction: a transaction held open while a person types would hold SQLite's write lock."""

    def handle(self, *args, **options):
        model = get_user_model()
        username = options["username"] or getpass.getuser()
        try:
            user = model._default_manager.using(options["database"]).get(**{model.USERNAME_FIELD: username})
        except model.DoesNotExist:
            raise CommandError(f"user '{username}' does not exist") from None
        self.stdout.write(f"Changing password for user '{user}'")
        password = self._ask_password(user)
        operator = shell_operator("changepassword")
        with transaction.atomic(using=options["database"]):
            user.set_password(password)
            user.save()
            change = f"password of {user.get_username()} changed"
            audit_record(action="change_password", channel="command", actor_label=operator, target=user,
                         summary=change, details={"command": "changepassword",
                                                  "arguments": command_arguments(args, options)})
            credentials_changed(user=user, change=change, channel="command", actor_label=operator)
        return f"Password changed successfully for user '{user}'"

    def _ask_password(self, user) -> str:
        for _ in range(MAX_TRIES):
            first = self._get_pass()
            second = self._get_pass("Password (again): ")
            if first != second:
                self.stdout.write("Passwords do not match. Please try again.")
                continue
            try:
                validate_password(second, user)
            except ValidationError as err:
                self.stderr.write("\n".join(err.messages))
                continue
            return first
        raise CommandError(f"Aborting password change for user '{user}' after {MAX_TRIES} attempts")
