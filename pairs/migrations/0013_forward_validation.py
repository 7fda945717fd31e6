"""Issue #17: the grading's backtest evidence moves from the bars *before* the screening window (a backcast) to the
validation bars *after* it. The backcast statistics are dropped rather than relabelled: they are not validation
evidence, and the next grading computes the validation window."""

import django.core.validators
from django.db import migrations, models


def drop_backcast_statistics(apps, schema_editor):
    apps.get_model("pairs", "PairStatistics").objects.filter(window="out_of_sample").delete()


class Migration(migrations.Migration):

    dependencies = [
        ('pairs', '0012_zscore_window_250'),
    ]

    operations = [
        migrations.RunPython(drop_backcast_statistics, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='strategyconfig',
            name='backtest_oos_bars',
        ),
        migrations.AddField(
            model_name='strategyconfig',
            name='validation_bars',
            field=models.PositiveIntegerField(default=500, help_text='Bars after the screening (formation) window on which a pair is traded with its formation fit frozen: the screening window ends this many bars before the newest bar, and these bars are the only backtest evidence for level 1', validators=[django.core.validators.MinValueValidator(1)]),
        ),
        migrations.AlterField(
            model_name='pairstatistics',
            name='window',
            field=models.CharField(choices=[('in_sample', 'Backtest, formation window'), ('validation', 'Backtest, validation after formation'), ('live', 'Live and paper trades')], max_length=16),
        ),
    ]
