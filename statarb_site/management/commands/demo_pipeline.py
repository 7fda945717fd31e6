from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from pairs.models import Candle


class Command(BaseCommand):
    help = (
        "The demo's main job on the embedded default: import the candle files in --data (once), screen the "
        "universe for cointegrated pairs (var/demo-selection.json), then grade them (var/demo-levels.json)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, required=True, help="directory of candle files (e.g. ../shared/...)")

    def handle(self, *args, data: Path, **options):
        if not Candle.objects.exists():
            if not data.is_dir():
                self.stdout.write(self.style.WARNING(
                    f"No candles stored and no data at {data}: fetch them with `manage.py fetch_candles` "
                    "(needs the exchange) or import files with `manage.py import_candles DIR`."
                ))
                return
            self.stdout.write(f"Importing candles from {data} ...")
            call_command("import_candles", str(data), verbosity=0)
        call_command("select_pairs", json_path=settings.VAR_DIR / "demo-selection.json", verbosity=1)
        call_command("update_stats", json_path=settings.VAR_DIR / "demo-levels.json")
