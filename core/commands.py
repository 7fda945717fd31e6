"""Checks shared by management commands, run before a command does any work.

A command that stores results and then writes a report must not find out that the report can't be written only
after the results were stored: the user would run it again and store them twice. So an output path is tried first.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import CommandError


def writable_output_path(option: str, path: Path | str | None) -> Path | None:
    """``path`` as a Path once it is known to be writable; CommandError naming ``option`` and the reason otherwise.

    Why open it: permission bits don't tell (root ignores them, a read-only mount or a full quota refuses anyway),
    so the file is opened for appending, which changes nothing in an existing file; one created by the check is
    removed again, so a run that fails later leaves no empty file behind.
    """
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise CommandError(f"{option} {path}: is a directory, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise CommandError(f"{option} {path}: the directory {parent} does not exist")
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise CommandError(f"{option} {path}: cannot be written ({exc.strerror or exc})") from None
    if not existed:
        path.unlink(missing_ok=True)
    return path


def output_write(option: str, path: Path, text: str) -> None:
    """Write ``text`` to a path ``writable_output_path`` accepted; a failure now (the disk filled up meanwhile) is a
    CommandError that says the results were stored all the same, so the user doesn't run the command again."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise CommandError(
            f"{option} {path}: could not be written ({exc.strerror or exc}); the results are stored in the database"
        ) from None


def finite_number(option: str, value: float, *, minimum: float, maximum: float, unit: str = "") -> float:
    """``value`` when it is a finite number in [minimum, maximum]; CommandError naming ``option`` and the limits
    otherwise. argparse's ``type=float`` takes "nan" and "inf", which pass every ``<`` test unnoticed."""
    unit = f" {unit}" if unit else ""
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise CommandError(f"{option} must be a number from {minimum:g} to {maximum:g}{unit}, got {value:g}")
    return value


# The open times a candle may have (pairs.marketdata.validation), with a year to spare at the end for the windows and
# bars a command adds to the moment it is given.
_EARLIEST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST_MOMENT = datetime(9999, 1, 1, tzinfo=UTC)


def utc_moment(value: str) -> datetime:
    """argparse ``type`` of an option naming a moment: ISO 8601, UTC unless it says otherwise, from 1970 to 9998.
    ``datetime.fromisoformat`` alone takes 0001-01-01, and the command's arithmetic on it ends in a traceback."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date or date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None
    try:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first day a datetime holds, in UTC
        moment = None
    if moment is None or not _EARLIEST_MOMENT <= moment < _LATEST_MOMENT:
        raise argparse.ArgumentTypeError(
            f"{value!r} is outside the times candles can have (1970-01-01 to 9998-12-31, UTC)")
    return moment


def shell_operator(command: str) -> str:
    """Who ran a command, for the audit trail: the operating-system user and machine (a command has no login; whoever
    can run it can read the settings, so the shell account is the identity that counts)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} (manage.py {command})"


def user_named(username: str, *, permission: str | None = None, active: bool = True, command: str = ""):
    """The user called ``username`` (active unless ``active`` is False), who holds ``permission`` when one is
    named; CommandError otherwise, audited as a refusal of ``command`` (when named) with the shell's operator."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    refusal = ""
    if user is None:
        # Not createsuperuser: a superuser holds every permission, and a reporting tool's token (create_api_token)
        # would then close trades and halt accounts. A user gets what its role (group) gives it.
        refusal = (f"no user named {username!r}: add it in the admin (Users > Add user) and put it in a role group "
                   f"(reporting for a reporting tool's token, trader to halt, resume and close trades)")
    elif active and not user.is_active:
        refusal = f"user {username!r} is not active"
    elif permission and not user.has_perm(permission):
        refusal = (f"user {username!r} lacks the permission {permission} (give them a role: manage.py setup_roles, "
                   f"then add them to a group in the admin)")
    if refusal:
        if command:
            from core.audit import audit_record

            audit_record(action="refused", channel="command", actor=user, actor_label=shell_operator(command),
                         summary=f"manage.py {command} for user {username!r} refused: {refusal}",
                         details={"user": username, "permission": permission or ""})
        raise CommandError(refusal)
    return user


def operator_label(command: str, user=None) -> str:
    """Who ran a command for the audit trail: the user it ran as (``--user``, a claim the shell's operator makes)
    together with that operator, or the operator alone."""
    operator = shell_operator(command)
    return f"{user.get_username()} via {operator}" if user is not None else operator


# Set by a command that asks to end its process without the interpreter's teardown (see end_without_teardown).
_end_without_teardown = False


def end_without_teardown() -> None:
    """Ask ``manage.py`` to end this process, once the command has returned successfully, without the interpreter's
    teardown: the exit handlers run (logging flushes its handlers), the database connections are closed and the
    output flushed, and the process ends, skipping the freeing of every module's objects one by one (0.13 s of the
    1.0 s ``select_pairs`` takes on 100 symbols, #18). Only ``manage.py`` acts on it, after its command returned: a
    command called in-process by tests or workers is unaffected, and a command that ``manage.py`` started and that
    calls this one (``demo_pipeline``) ends the same way once it has returned successfully itself."""
    global _end_without_teardown
    _end_without_teardown = True


def exit_if_teardown_skipped() -> None:
    """Called by ``manage.py`` after the command returned: end the process now if the command asked for it and no
    thread of its own is still running (the normal exit would wait for such a thread; then it takes that path)."""
    import atexit
    import sys
    import threading

    if not _end_without_teardown:
        return
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # what the interpreter would run first: logging.shutdown, weakref finalizers, tqdm
    from django.db import connections

    connections.close_all()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)
