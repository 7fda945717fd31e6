import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pairs.models import StrategyConfig
from pairs.services.screening import ScreeningError, screening_run


class Command(BaseCommand):
    help = (
        "Screen every ordered pair of the universe for cointegration (Engle-Granger on log closes, as statsmodels' "
        "coint(trend='c', autolag='aic')), control the false discovery rate over the run (Benjamini-Hochberg), "
        "confirm candidates out of sample and with Johansen, and store the run, the pairs and their tests."
    )

    def add_arguments(self, parser):
        parser.add_argument("--lookback", type=int, default=None,
                            help="bars of the window (default: the strategy configuration's, 2000)")
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write every test to FILE")
        parser.add_argument("--symbols", default="", help="comma-separated subset of the universe")

    def handle(self, *args, lookback, json_path, symbols, verbosity, **options):
        config = StrategyConfig.current()
        wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()] or None
        bar = tqdm(total=0, unit="pair", disable=verbosity == 0, desc="screening")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        try:
            outcome = screening_run(config=config, lookback_bars=lookback, symbols=wanted, progress=progress)
        except ScreeningError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        run = outcome.run
        window = f"{run.window_start:%Y-%m-%d %H:%M}..{run.window_end:%Y-%m-%d %H:%M} UTC"
        self.stdout.write(
            f"run {run.pk}: {run.n_symbols} symbols, {window}, {run.n_tests} tests, "
            f"{run.n_passed} passed (p<={config.max_pvalue}, q<={config.max_qvalue}), "
            f"{run.n_candidates} confirmed candidates, {run.duration_seconds:.1f}s"
        )
        if json_path:
            json_path.write_text(json.dumps(outcome.as_json(), indent=1))
            self.stdout.write(f"wrote {json_path}")
