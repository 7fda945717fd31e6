"""The default Celery beat schedule, declared in code and written to django_celery_beat's tables.

Seeding is idempotent: a schedule that exists is left as it is, so what someone changed in the admin (a time,
a disabled entry) survives every deploy; ``reset=True`` puts the defaults back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from core.audit import audit_record


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    queue: str
    crontab: dict[str, str] | None = None  # minute, hour, day_of_week, day_of_month, month_of_year (UTC)
    every_seconds: int | None = None
    kwargs: dict = field(default_factory=dict)
    description: str = ""


DEFAULT_SCHEDULES: tuple[DefaultSchedule, ...] = (
    DefaultSchedule(
        name="selection: market data",
        task="statarb_site.pipelines.market_data_pipeline",
        queue="default",
        crontab={"minute": "1"},
        description="Refresh the universe and fetch the candles closed since the last run (hourly, UTC), then the "
        "signals on the new bar, then a tick of every bot.",
    ),
    DefaultSchedule(
        name="selection: cointegration screening",
        task="statarb_site.pipelines.screening_pipeline",
        queue="default",
        crontab={"minute": "20", "hour": "0"},
        description="Screen every pair of the universe for cointegration (daily, after the midnight bar), then "
        "grade every pair.",
    ),
    DefaultSchedule(
        name="selection: statistics and levels",
        task="ladder.tasks.update_pair_statistics",
        queue="selection",
        crontab={"minute": "50", "hour": "0"},
        description="Sanity checks, per-pair statistics and level grading (also chained after each screening).",
    ),
    DefaultSchedule(
        name="execution: signals",
        task="statarb_site.pipelines.signals_pipeline",
        queue="default",
        crontab={"minute": "15"},
        description="Every active pair's z-score and rule action at the newest closed bar, then a tick of every bot "
        "(also chained after each market-data fetch; this run catches up if a fetch failed).",
    ),
    DefaultSchedule(
        name="execution: bots",
        task="execution.tasks.dispatch_bots",
        queue="signals",
        crontab={"minute": "*"},
        description="A tick of every enabled account's bot on its own queue: in-flight trades, reconciliation "
        "every 5 minutes, funding, closes and opens (also sent after each signal run).",
    ),
    DefaultSchedule(
        name="risk: guard",
        task="monitoring.tasks.run_guard",
        queue="risk",
        crontab={"minute": "*"},
        description="Every account's equity marked to market against its limits (daily loss, drawdown, losing "
        "streak, open trades, exposure) and the detectors of abnormal conditions; raises and lifts halts, writes "
        "today's PnL snapshot.",
    ),
    DefaultSchedule(
        name="risk: daily PnL snapshot",
        task="monitoring.tasks.snapshot_daily_pnl",
        queue="risk",
        crontab={"minute": "*/15"},
        description="Rewrite today's PnL snapshot of every enabled account, marked to market (the guard does it "
        "every minute too; this one writes it even when no guard cycle runs).",
    ),
    DefaultSchedule(
        name="risk: close yesterday's PnL snapshot",
        task="monitoring.tasks.snapshot_daily_pnl_previous_day",
        queue="risk",
        crontab={"minute": "5", "hour": "0"},
        description="Final snapshot of the UTC day that just ended, with trades closed up to midnight.",
    ),
    DefaultSchedule(
        name="notifications: send",
        task="notifications.tasks.send_notifications",
        queue="notifications",
        every_seconds=30,
        description="Send the notifications that are due (also enqueued after each one's commit): retries after "
        "outages, waits out Telegram's rate limits.",
    ),
    DefaultSchedule(
        name="notifications: daily summary",
        task="monitoring.tasks.notify_daily_summaries",
        queue="risk",
        crontab={"minute": "5", "hour": "0"},
        description="Each enabled account's summary of the UTC day that just ended (trades, PnL net of fees and "
        "funding, open trades, halts) as a notification.",
    ),
)


def _schedule_objects(default: DefaultSchedule) -> dict:
    if default.crontab is not None:
        spec = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}
        spec.update(default.crontab)
        crontab, _ = CrontabSchedule.objects.get_or_create(timezone="UTC", **spec)
        return {"crontab": crontab, "interval": None}
    interval, _ = IntervalSchedule.objects.get_or_create(every=default.every_seconds, period=IntervalSchedule.SECONDS)
    return {"interval": interval, "crontab": None}


def _default_row(default: DefaultSchedule) -> PeriodicTask | None:
    """The default's row: by its name, else the row of its task, renamed in the admin (recreating it under the
    default name would run the guard or the bots' dispatch twice a minute)."""
    return (PeriodicTask.objects.filter(name=default.name).first()
            or PeriodicTask.objects.filter(task=default.task).order_by("pk").first())


def _differences(row: PeriodicTask, values: dict) -> dict[str, tuple[str, str]]:
    return {attribute: (str(getattr(row, attribute)), str(value)) for attribute, value in values.items()
            if getattr(row, attribute) != value}


@transaction.atomic
def periodic_tasks_setup(*, reset: bool = False, actor_label: str = "") -> dict[str, list[str]]:
    """Create the default schedules that are missing (or, with ``reset``, rewrite those that differ from their
    default). A default renamed in the admin is found by its task and kept (or, with ``reset``, renamed back). Each
    schedule created or rewritten is audited (by ``actor_label``), with what the reset changed: the guard's and
    the bots' schedules decide what runs."""
    created, reset_names, kept = [], [], []
    for default in DEFAULT_SCHEDULES:
        values = {
            "name": default.name,
            "task": default.task,
            "queue": default.queue,
            "kwargs": json.dumps(default.kwargs),
            "description": default.description,
            "enabled": True,
            **_schedule_objects(default),
        }
        existing = _default_row(default)
        if existing is None:
            task = PeriodicTask.objects.create(**values)
            created.append(default.name)
            audit_record(action="create_periodic_task", channel="command", actor_label=actor_label, target=task,
                         summary=f"created periodic task {task.name} ({task.task})")
        elif reset and (changes := _differences(existing, values)):
            for attribute, value in values.items():
                setattr(existing, attribute, value)
            existing.save()
            changed = ", ".join(f"{attribute} {before} -> {after}" for attribute, (before, after) in changes.items())
            reset_names.append(f"{default.name} ({changed})")
            was_enabled = "enabled" not in changes
            audit_record(action="reset_periodic_task", channel="command", actor_label=actor_label, target=existing,
                         summary=f"reset periodic task {existing.name} to its default ({changed})"
                                 + ("" if was_enabled else ", enabling it again"),
                         details={"was_enabled": was_enabled,
                                  "changes": {attribute: list(pair) for attribute, pair in changes.items()}})
        else:
            kept.append(default.name if existing.name == default.name else f"{default.name} (as {existing.name!r})")
    return {"created": created, "reset": reset_names, "kept": kept}
