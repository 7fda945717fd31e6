"""Fill the daily trade totals from the trades already stored (the same code as manage.py rebuild_daily_totals)."""

from django.db import migrations


def fill(apps, schema_editor):
    from execution.services.daily_totals import daily_totals_rebuild

    daily_totals_rebuild(using=schema_editor.connection.alias, trades_model=apps.get_model("execution", "PairTrade"),
                         totals_model=apps.get_model("execution", "DailyTradeTotals"))


def empty(apps, schema_editor):
    apps.get_model("execution", "DailyTradeTotals").objects.using(schema_editor.connection.alias).all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ("execution", "0011_daily_trade_totals"),
    ]

    operations = [
        migrations.RunPython(fill, empty),
    ]
