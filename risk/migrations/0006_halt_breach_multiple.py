"""Halt.breach_multiple: the multiple of its limit a guard halt was raised at, kept on the halt itself. Until now the
guard read it from the critical guard event written at the same moment; the halts raised before get it from there."""

from django.db import migrations, models

MULTIPLE = "multiple_of_limit"  # monitoring.guard.limits.MULTIPLE, as the events recorded it


def from_guard_events(apps, schema_editor):
    Halt = apps.get_model("risk", "Halt")
    GuardEvent = apps.get_model("risk", "GuardEvent")
    for halt in Halt.objects.filter(source="guard", breach_multiple__isnull=True).exclude(trigger="").iterator():
        details = (GuardEvent.objects.filter(account_id=halt.account_id, kind=halt.trigger, created_at=halt.created_at,
                                             severity="critical")
                   .values_list("details", flat=True).first())
        value = (details or {}).get(MULTIPLE)
        if value is not None:
            Halt.objects.filter(pk=halt.pk).update(breach_multiple=float(value))


class Migration(migrations.Migration):

    dependencies = [
        ("risk", "0005_alter_guardevent_created_at_alter_halt_created_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="halt",
            name="breach_multiple",
            field=models.FloatField(
                blank=True, null=True,
                help_text="How many times its limit the breach was when the guard raised it: once cleared, the halt is "
                          "raised again only past this plus one limit (empty: not a measured limit)"),
        ),
        migrations.RunPython(from_guard_events, migrations.RunPython.noop),
    ]
