"""The default beat schedule: seeded idempotently, admin edits survive, reset restores, every task exists."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from statarb_site.periodic import DEFAULT_SCHEDULES, periodic_tasks_setup

pytestmark = pytest.mark.django_db

NAMES = [default.name for default in DEFAULT_SCHEDULES]
SNAPSHOT = "risk: daily PnL snapshot"
CLOSE_DAY = "risk: close yesterday's PnL snapshot"


def _crontab(task: PeriodicTask) -> tuple[str, str, str, str, str, str]:
    c = task.crontab
    return (c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year, str(c.timezone))


def test_the_defaults_hold_the_selection_and_pnl_schedules():
    assert NAMES == [
        "selection: market data",
        "selection: cointegration screening",
        "selection: statistics and levels",
        "execution: signals",
        "execution: bots",
        "risk: guard",
        SNAPSHOT,
        CLOSE_DAY,
        "notifications: send",
        "notifications: daily summary",
    ]
    assert len(set(NAMES)) == len(NAMES)
    by_name = {default.name: default for default in DEFAULT_SCHEDULES}
    assert by_name["selection: market data"].crontab == {"minute": "1"}  # hourly
    assert by_name["selection: cointegration screening"].crontab == {"minute": "20", "hour": "0"}  # daily
    assert by_name["execution: bots"].crontab == {"minute": "*"}  # a tick of every bot each minute
    assert by_name["risk: guard"].crontab == {"minute": "*"} and by_name["risk: guard"].queue == "risk"
    assert by_name["notifications: send"].every_seconds == 30  # the sweep behind each commit's nudge
    assert by_name["notifications: daily summary"].crontab == {"minute": "5", "hour": "0"}  # 00:05 UTC


def test_setup_creates_every_default_with_its_queue_and_crontab():
    outcome = periodic_tasks_setup()

    assert outcome == {"created": NAMES, "reset": [], "kept": []}
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(DEFAULT_SCHEDULES)
    for default in DEFAULT_SCHEDULES:
        task = PeriodicTask.objects.get(name=default.name)
        assert task.task == default.task
        assert task.queue == default.queue
        assert task.enabled is True
        assert (task.interval is None) == (default.every_seconds is None)
        assert json.loads(task.kwargs) == default.kwargs
        assert task.description == default.description

    assert PeriodicTask.objects.get(name=SNAPSHOT).task == "monitoring.tasks.snapshot_daily_pnl"
    assert PeriodicTask.objects.get(name=SNAPSHOT).queue == "risk"
    assert _crontab(PeriodicTask.objects.get(name=SNAPSHOT)) == ("*/15", "*", "*", "*", "*", "UTC")
    assert PeriodicTask.objects.get(name=CLOSE_DAY).task == "monitoring.tasks.snapshot_daily_pnl_previous_day"
    assert _crontab(PeriodicTask.objects.get(name=CLOSE_DAY)) == ("5", "0", "*", "*", "*", "UTC")


def test_running_again_creates_nothing_and_keeps_admin_edits():
    periodic_tasks_setup()
    crontabs_before = CrontabSchedule.objects.count()
    # What someone might change in the admin: disable one schedule, move the other to another time.
    PeriodicTask.objects.filter(name=SNAPSHOT).update(enabled=False)
    later, _ = CrontabSchedule.objects.get_or_create(
        minute="30", hour="1", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    close_day = PeriodicTask.objects.get(name=CLOSE_DAY)
    close_day.crontab = later
    close_day.save()

    outcome = periodic_tasks_setup()

    assert outcome == {"created": [], "reset": [], "kept": NAMES}
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(NAMES)
    assert PeriodicTask.objects.get(name=SNAPSHOT).enabled is False
    assert _crontab(PeriodicTask.objects.get(name=CLOSE_DAY)) == ("30", "1", "*", "*", "*", "UTC")
    assert CrontabSchedule.objects.count() == crontabs_before + 1  # only the one made above


def test_reset_restores_the_defaults():
    periodic_tasks_setup()
    PeriodicTask.objects.filter(name=SNAPSHOT).update(enabled=False, queue="default", kwargs='{"day": "2021-01-01"}')
    later, _ = CrontabSchedule.objects.get_or_create(
        minute="30", hour="1", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.filter(name=CLOSE_DAY).update(crontab=later)

    outcome = periodic_tasks_setup(reset=True)

    assert outcome == {
        "created": [],
        "reset": [f'{SNAPSHOT} (queue default -> risk, kwargs {{"day": "2021-01-01"}} -> {{}}, enabled False -> True)',
                  f"{CLOSE_DAY} (crontab 30 1 * * * (m/h/dM/MY/d) UTC -> 5 0 * * * (m/h/dM/MY/d) UTC)"],
        "kept": [n for n in NAMES if n not in (SNAPSHOT, CLOSE_DAY)],  # unchanged: not reported (nor audited) as reset
    }
    snapshot = PeriodicTask.objects.get(name=SNAPSHOT)
    assert (snapshot.enabled, snapshot.queue, json.loads(snapshot.kwargs)) == (True, "risk", {})
    assert _crontab(PeriodicTask.objects.get(name=CLOSE_DAY)) == ("5", "0", "*", "*", "*", "UTC")
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(NAMES)


def test_reset_recreates_a_deleted_schedule():
    periodic_tasks_setup()
    PeriodicTask.objects.filter(name=CLOSE_DAY).delete()
    assert periodic_tasks_setup(reset=True) == {
        "created": [CLOSE_DAY], "reset": [], "kept": [n for n in NAMES if n != CLOSE_DAY]
    }
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(NAMES)


def _command(*args: str) -> list[str]:
    out = StringIO()
    call_command("setup_periodic_tasks", *args, stdout=out)
    return out.getvalue().splitlines()


def test_management_command_output():
    assert _command() == [*(f"created: {n}" for n in NAMES), f"{len(NAMES)} schedule(s) created."]
    assert _command() == [*(f"kept: {n}" for n in NAMES), "0 schedule(s) created."]
    assert _command("--reset") == [*(f"kept: {n}" for n in NAMES), "0 schedule(s) created."]  # nothing to reset
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(NAMES)


def test_a_reset_that_enables_a_schedule_again_is_audited():
    from core.models import AuditEntry

    _command()
    assert AuditEntry.objects.filter(action="create_periodic_task").count() == len(NAMES)
    PeriodicTask.objects.filter(name=SNAPSHOT).update(enabled=False)  # a person turned it off in the admin
    _command("--reset")
    again = AuditEntry.objects.get(action="reset_periodic_task")  # the one schedule the reset changed
    assert again.target_id == str(PeriodicTask.objects.get(name=SNAPSHOT).pk)
    assert again.summary == f"reset periodic task {SNAPSHOT} to its default (enabled False -> True), enabling it again"
    assert again.details["changes"] == {"enabled": ["False", "True"]}
    assert "enabling it again" in again.summary and "(manage.py setup_periodic_tasks)" in again.actor_label


def test_a_default_renamed_in_the_admin_is_kept_not_created_again_and_a_reset_renames_it_back():
    """Found by name only, a renamed guard schedule came back under the default name at the next make run: the
    guard (or the bots' dispatch) then ran twice a minute."""
    periodic_tasks_setup()
    PeriodicTask.objects.filter(name="risk: guard").update(name="guard (every minute)")

    assert periodic_tasks_setup()["kept"][5] == "risk: guard (as 'guard (every minute)')"
    assert PeriodicTask.objects.filter(task="monitoring.tasks.run_guard").count() == 1

    outcome = periodic_tasks_setup(reset=True)

    assert outcome["reset"] == ["risk: guard (name guard (every minute) -> risk: guard)"]
    assert list(PeriodicTask.objects.filter(task="monitoring.tasks.run_guard").values_list("name", flat=True)) == [
        "risk: guard"]


def test_every_scheduled_task_is_a_registered_celery_task():
    from statarb_site.celery import app

    app.loader.import_default_modules()
    registered = set(app.tasks)
    missing = [default.task for default in DEFAULT_SCHEDULES if default.task not in registered]
    assert missing == []
    assert "monitoring.tasks.snapshot_daily_pnl" in registered
