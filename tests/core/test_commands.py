"""The checks management commands run on their arguments before doing any work."""

from __future__ import annotations

import argparse
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from core.commands import finite_number, output_write, utc_moment, writable_output_path


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A directory this process may not create files in: read-only bits, or sysfs where even root may not."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        yield locked
        locked.chmod(0o700)
        return
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root without sysfs: no directory refuses root")
    yield Path("/sys/kernel")


def test_no_path_is_no_output():
    assert writable_output_path("--json", None) is None


def test_a_writable_path_is_returned_and_no_file_is_left_behind(tmp_path):
    path = tmp_path / "out.json"

    assert writable_output_path("--json", str(path)) == path

    assert not path.exists()  # a run that fails later leaves no empty file


def test_an_existing_file_is_left_as_it_is(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("earlier results")

    assert writable_output_path("--json", path) == path

    assert path.read_text() == "earlier results"


def test_a_missing_directory_is_named(tmp_path):
    path = tmp_path / "nowhere" / "out.json"

    with pytest.raises(CommandError) as info:
        writable_output_path("--json", path)

    assert str(info.value) == f"--json {path}: the directory {tmp_path / 'nowhere'} does not exist"


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(CommandError) as info:
        writable_output_path("--json", tmp_path)

    assert str(info.value) == f"--json {tmp_path}: is a directory, not a file"


def test_a_directory_without_permission_is_refused(unwritable_dir):
    path = unwritable_dir / "statarb-out.json"

    with pytest.raises(CommandError) as info:
        writable_output_path("--json", path)

    assert str(info.value) == f"--json {path}: cannot be written (Permission denied)"
    assert not path.exists()


def test_a_write_that_fails_after_the_check_says_the_results_are_stored(tmp_path):
    path = tmp_path / "gone" / "out.json"

    with pytest.raises(CommandError) as info:
        output_write("--json", path, "{}")

    assert str(info.value).startswith(f"--json {path}: could not be written (No such file or directory)")
    assert str(info.value).endswith("; the results are stored in the database")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 11.0])
def test_finite_number_refuses_nan_infinite_and_out_of_range(value):
    with pytest.raises(CommandError) as info:
        finite_number("--days", value, minimum=0, maximum=10, unit="days")

    assert str(info.value) == f"--days must be a number from 0 to 10 days, got {value:g}"


def test_finite_number_takes_the_limits():
    assert finite_number("--days", 0.0, minimum=0, maximum=10) == 0.0
    assert finite_number("--days", 10.0, minimum=0, maximum=10) == 10.0


_EXIT_SCRIPT = """
import atexit, os, sys, threading, time
sys.path.insert(0, {root!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statarb_site.settings.test")
import django
django.setup()
from core import commands
atexit.register(lambda: open({marker!r}, "a").write("exit handlers ran"))
if {with_thread}:
    threading.Thread(target=time.sleep, args=(0.5,)).start()
if {asked}:
    commands.end_without_teardown()
print("the command's output", end="")  # no newline: only a flush writes it to a pipe
commands.exit_if_teardown_skipped()
open({marker!r}, "a").write("teardown path, ")
"""


@pytest.mark.parametrize(("asked", "with_thread", "expected"), [
    (True, False, "exit handlers ran"),  # ended at once: the lines after the call never ran
    (False, False, "teardown path, exit handlers ran"),  # not asked: the normal path
    (True, True, "teardown path, exit handlers ran"),  # a thread of its own still runs: the normal path waits
])
def test_a_command_that_asks_ends_without_teardown_after_its_exit_handlers(tmp_path, asked, with_thread, expected):
    import subprocess
    import sys

    marker = tmp_path / "marker"
    script = _EXIT_SCRIPT.format(root=str(Path(__file__).resolve().parents[2]), marker=str(marker), asked=asked,
                                 with_thread=with_thread)
    env = {**os.environ, "STATARB_VAR_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the command's output"
    assert marker.read_text() == expected


# ---------------------------------------------------------------------------------------------------- utc_moment


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2021-07-24", datetime(2021, 7, 24, tzinfo=UTC)),
        ("2021-07-24T23:00", datetime(2021, 7, 24, 23, tzinfo=UTC)),
        ("2021-07-25T01:00+02:00", datetime(2021, 7, 24, 23, tzinfo=UTC)),
        ("1970-01-01", datetime(1970, 1, 1, tzinfo=UTC)),
        ("9998-12-31T23:00Z", datetime(9998, 12, 31, 23, tzinfo=UTC)),
    ],
)
def test_utc_moment_reads_iso_8601_as_utc(value, moment):
    assert utc_moment(value) == moment


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2021-13-01", "'2021-13-01' is not an ISO 8601 date or date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"),
        ("yesterday", "'yesterday' is not an ISO 8601 date or date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"),
        ("0001-01-01", "'0001-01-01' is outside the times candles can have (1970-01-01 to 9998-12-31, UTC)"),
        ("0001-01-01T00:00+01:00", "'0001-01-01T00:00+01:00' is outside the times candles can have (1970-01-01 to "
                                   "9998-12-31, UTC)"),
        ("1969-12-31T23:00", "'1969-12-31T23:00' is outside the times candles can have (1970-01-01 to 9998-12-31, "
                             "UTC)"),
        ("9999-12-31T23:00", "'9999-12-31T23:00' is outside the times candles can have (1970-01-01 to 9998-12-31, "
                             "UTC)"),
    ],
)
def test_utc_moment_refuses_what_is_no_moment_or_outside_the_candles_range(value, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        utc_moment(value)

    assert str(info.value) == message


@pytest.mark.django_db
def test_a_missing_user_is_not_sent_to_createsuperuser():
    # `create_api_token powerbi` before the user exists: the hint was "create it with manage.py createsuperuser",
    # which gives a reporting tool's token every permission (closing trades, halting accounts).
    from core.commands import user_named

    with pytest.raises(CommandError) as refused:
        user_named("powerbi", permission="monitoring.read_api", command="create_api_token")
    text = str(refused.value)
    assert "createsuperuser" not in text
    assert "no user named 'powerbi'" in text and "role" in text and "reporting" in text


@pytest.mark.django_db
def test_a_refusal_is_audited_with_the_user_as_the_command_took_it():
    # create_api_token takes the user as a positional argument: its refusal read "manage.py create_api_token --user
    # powerbi", an option the command does not have.
    from django.core.management import call_command

    from core.models import AuditEntry

    with pytest.raises(CommandError):
        call_command("create_api_token", "powerbi")
    summary = AuditEntry.objects.get(action="refused").summary
    assert summary.startswith("manage.py create_api_token for user 'powerbi' refused: no user named 'powerbi'")
    assert "--user" not in summary
