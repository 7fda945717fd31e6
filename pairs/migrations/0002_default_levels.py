"""Seed the graduation ladder. Thresholds are starting points to tune in the admin, chosen from the research
notes: a naive walk-forward of every p < 0.01 pair has profit factor ~0.79, so a pair must show clearly better
out-of-sample results, and then paper or live evidence, before capital reaches it."""

from decimal import Decimal

from django.db import migrations

DEFAULT_LEVELS = [
    {
        "number": 0, "name": "watch",
        "description": "Passed the screen; watched, not traded.",
        "trades_real_capital": False, "requires_live_evidence": False,
        "min_trades": 0, "min_win_rate": 0.0, "min_profit_factor": 0.0, "max_drawdown": 1.0, "max_qvalue": 1.0,
        "min_half_life_bars": 0.0, "max_half_life_bars": 1e9, "capital_weight": Decimal("0"),
    },
    {
        "number": 1, "name": "paper",
        "description": "Out-of-sample backtest evidence; traded on paper accounts only.",
        "trades_real_capital": False, "requires_live_evidence": False,
        "min_trades": 8, "min_win_rate": 0.5, "min_profit_factor": 1.2, "max_drawdown": 0.15, "max_qvalue": 0.10,
        "min_half_life_bars": 5.0, "max_half_life_bars": 200.0, "capital_weight": Decimal("0"),
    },
    {
        "number": 2, "name": "small live",
        "description": "Paper trading confirmed the backtest; real money at a fraction of the budget.",
        "trades_real_capital": True, "requires_live_evidence": True,
        "min_trades": 10, "min_win_rate": 0.55, "min_profit_factor": 1.3, "max_drawdown": 0.10, "max_qvalue": 0.10,
        "min_half_life_bars": 5.0, "max_half_life_bars": 150.0, "capital_weight": Decimal("0.25"),
    },
    {
        "number": 3, "name": "full live",
        "description": "Sustained live results; the full per-trade budget.",
        "trades_real_capital": True, "requires_live_evidence": True,
        "min_trades": 30, "min_win_rate": 0.55, "min_profit_factor": 1.3, "max_drawdown": 0.08, "max_qvalue": 0.05,
        "min_half_life_bars": 5.0, "max_half_life_bars": 120.0, "capital_weight": Decimal("1"),
    },
]


def create_levels(apps, schema_editor):
    Level = apps.get_model("pairs", "Level")
    for values in DEFAULT_LEVELS:
        Level.objects.get_or_create(number=values["number"], defaults=values)


class Migration(migrations.Migration):
    dependencies = [("pairs", "0001_initial")]

    operations = [migrations.RunPython(create_levels, migrations.RunPython.noop)]
