"""The audit of state-changing management commands that Django and its third-party apps bring (``createsuperuser``,
``changepassword``, django-axes' resets, ``clearsessions``, ``loaddata``, ``flush``...).

Each is overridden in ``core/management/commands`` by a subclass of the original that does what it did and leaves
an audit entry naming the shell's operator (``core.commands.shell_operator``: whoever can run ``manage.py`` can read
the settings, so the shell account is the identity that counts). ``core`` comes first in ``INSTALLED_APPS``: of two
apps with a command of one name, Django runs the first app's.
"""

from __future__ import annotations

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, transaction

from core.audit import audit_record
from core.commands import shell_operator
from core.secrets import redact

# Options every command has, which say how it runs, not what it changes.
_PLUMBING = frozenset({"verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color", "skip_checks",
                       "stdout", "stderr", "interactive", "database"})


def command_arguments(args: tuple, options: dict) -> list[str]:
    """What a command was asked to do: its positional arguments, then the options given (a default left out, a list
    joined by commas), known secrets masked. No command overridden here takes a password as an argument."""
    shown = [redact(str(arg)) for arg in args]
    for name, value in sorted(options.items()):
        if name in _PLUMBING or value in (None, False, [], (), ""):
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(item) for item in value)
        shown.append(f"--{name}" if value is True else f"--{name}={redact(str(value))}")
    return shown


class CommandAudit:
    """Mixed in before a third-party ``Command``: ``audit`` writes an entry naming the command, its arguments and the
    shell's operator."""

    audit_action = ""
    audit_what = ""

    @property
    def command_name(self) -> str:
        return type(self).__module__.rsplit(".", 1)[-1]

    def audit(self, args: tuple, options: dict, *, details: dict, action: str = "", summary: str = "",
              actor=None, target=None) -> None:
        arguments = command_arguments(args, options)
        removed = f" ({details['rows_removed']} row(s) removed)" if "rows_removed" in details else ""
        audit_record(action=action or self.audit_action or self.command_name, channel="command", actor=actor,
                     actor_label=shell_operator(self.command_name), target=target,
                     summary=summary or f"manage.py {' '.join([self.command_name, *arguments])}: "
                                        f"{self.audit_what}{removed}",
                     details={"command": self.command_name, "arguments": arguments, **details})


class AuditedCommand(CommandAudit):
    """Runs the command's ``handle`` and writes the audit entry in one transaction (the command's change is not kept
    without its entry). ``counted_model`` ("app.Model") is the table the command deletes from: the entry says how
    many rows went. A command that asks on the terminal (``interactive``, the default of those that have the option)
    is not run in a transaction, which would hold SQLite's write lock (``transaction_mode`` IMMEDIATE) and stop every
    worker's writes while a person types: its entry is written once it has returned, and only if it changed rows."""

    counted_model = ""

    def handle(self, *args, **options):
        database = options.get("database") or DEFAULT_DB_ALIAS
        if options.get("interactive"):
            return self._run_and_audit(database, args, options)
        with transaction.atomic(using=database):
            return self._run_and_audit(database, args, options)

    def _run_and_audit(self, database: str, args: tuple, options: dict):
        model = apps.get_model(self.counted_model) if self.counted_model else None
        before = model._default_manager.using(database).count() if model is not None else 0
        result = super().handle(*args, **options)
        details = self.audit_details()
        if model is not None:
            details["rows_removed"] = before - model._default_manager.using(database).count()
        if not options.get("interactive") or details.get("rows_removed"):
            self.audit(args, options, details=details)
        return result

    def audit_details(self) -> dict:
        return {}


class _AuditedManager:
    """A user manager whose ``create_superuser`` writes its audit entry in the transaction that creates the user."""

    def __init__(self, manager, on_create):
        self._manager, self._on_create = manager, on_create

    def __getattr__(self, name):
        return getattr(self._manager, name)

    def db_manager(self, using=None, hints=None):
        return _AuditedManager(self._manager.db_manager(using, hints), self._on_create)

    def create_superuser(self, *args, **kwargs):
        with transaction.atomic(using=self._manager.db):
            user = self._manager.create_superuser(*args, **kwargs)
            self._on_create(user)
        return user


class AuditedUserModel:
    """The user model as ``createsuperuser`` sees it (``self.UserModel``), with its ``_default_manager``'s
    ``create_superuser`` audited: the command asks on the terminal first and creates the user at the very end, so
    only that last step is in the transaction, with its audit entry."""

    def __init__(self, model, on_create):
        self._model, self._on_create = model, on_create

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    @property
    def _default_manager(self):
        return _AuditedManager(self._model._default_manager, self._on_create)
