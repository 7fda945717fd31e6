"""Beat schedules saved under the task names of before the restructuring point at the tasks' new homes."""

from django.db import migrations

# A copy, not an import of statarb_site.periodic: a migration must keep meaning what it meant when it was written.
RENAMED_TASKS = {
    "pairs.tasks.fetch_market_data": ("statarb_site.pipelines.market_data_pipeline", "default"),
    "pairs.tasks.screen_pairs": ("statarb_site.pipelines.screening_pipeline", "default"),
    "pairs.tasks.update_pair_statistics": ("ladder.tasks.update_pair_statistics", "selection"),
    "execution.tasks.compute_signals": ("statarb_site.pipelines.signals_pipeline", "default"),
    "risk.tasks.snapshot_daily_pnl": ("monitoring.tasks.snapshot_daily_pnl", "risk"),
    "risk.tasks.snapshot_daily_pnl_previous_day": ("monitoring.tasks.snapshot_daily_pnl_previous_day", "risk"),
}


def forwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for old, (new, queue) in RENAMED_TASKS.items():
        PeriodicTask.objects.filter(task=old).update(task=new, queue=queue)


def backwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for old, (new, _queue) in RENAMED_TASKS.items():
        PeriodicTask.objects.filter(task=new).update(task=old)


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]

    operations = [migrations.RunPython(forwards, backwards)]
