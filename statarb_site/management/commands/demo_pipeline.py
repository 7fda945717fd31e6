from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from pairs.models import Pair
from pairs.selectors import candle_bounds

DEMO_REPLAY_DAYS = 21


class Command(BaseCommand):
    help = (
        "The demo's main job on the embedded default: import the candle files in --data (once), screen the "
        "universe for cointegrated pairs (var/demo-selection.json), then grade them (var/demo-levels.json). On a "
        "database without pairs it first replays the last weeks through the paper bot (var/demo-replay.json)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, required=True, help="directory of candle files (e.g. ../shared/...)")

    def handle(self, *args, data: Path, **options):
        if candle_bounds()[1] is None:
            if not data.is_dir():
                self.stdout.write(self.style.WARNING(
                    f"No candles stored and no data at {data}: fetch them with `manage.py fetch_candles` "
                    "(needs the exchange) or import files with `manage.py import_candles DIR`."
                ))
                return
            self.stdout.write(f"Importing candles from {data} ...")
            call_command("import_candles", str(data), verbosity=0)
        if not Pair.objects.exists():
            # The execution path on history before any pair exists (a replay needs a database without pairs: its
            # walk-forward selection creates them): the last DEMO_REPLAY_DAYS through signals -> bot -> paper.
            newest = candle_bounds()[1]
            start = (newest - timedelta(days=DEMO_REPLAY_DAYS)).date().isoformat()
            self.stdout.write(f"Replaying the last {DEMO_REPLAY_DAYS} days through the paper bot ...")
            call_command("replay", start=start, json_path=settings.VAR_DIR / "demo-replay.json", verbosity=1)
        call_command("select_pairs", json_path=settings.VAR_DIR / "demo-selection.json", verbosity=1)
        call_command("update_stats", json_path=settings.VAR_DIR / "demo-levels.json")
