from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pairs", "0008_funding_rates")]

    operations = [
        migrations.RenameModel(old_name="SelectionConfig", new_name="StrategyConfig"),
        migrations.AlterModelOptions(
            name="strategyconfig",
            options={"verbose_name": "strategy configuration", "verbose_name_plural": "strategy configuration"},
        ),
        migrations.RenameField(model_name="pair", old_name="zscore", new_name="screening_zscore"),
        migrations.AlterField(
            model_name="pair",
            name="screening_zscore",
            field=models.FloatField(
                blank=True, help_text="z of the spread at the end of the screening window (not the live z)", null=True
            ),
        ),
    ]
