import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.audit import audit_record
from core.commands import end_without_teardown, output_write, shell_operator, utc_moment, writable_output_path
from pairs.marketdata.validation import timeframe_ms
from pairs.models import StrategyConfig
from pairs.selectors import candle_bounds
from pairs.services.screening import ScreeningError, screening_run


class Command(BaseCommand):
    help = (
        "Screen every ordered pair of the universe for cointegration (Engle-Granger on log closes, as statsmodels' "
        "coint(trend='c', autolag='aic')), control the false discovery rate over the run (Benjamini-Hochberg), "
        "confirm candidates out of sample and with Johansen, and store the run, the pairs and their tests."
    )

    # A numerical batch: the system checks would import the URL conf and the API stack for nothing (#18: start-up
    # is a large part of a 100-symbol run). `manage.py check` and the web processes still run them.
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--lookback", type=int, default=None,
                            help="bars of the window (default: the strategy configuration's, 2000; at most the "
                                 "bars the stored candles span)")
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write every test to FILE")
        parser.add_argument("--symbols", default="",
                            help="comma-separated subset of the universe (one outside it is refused, naming it)")
        parser.add_argument("--end", type=utc_moment, default=None,
                            help="open time (UTC) of the window's last bar, e.g. 2021-07-24T23:00 (default: the "
                                 "newest stored bar)")

    def handle(self, *args, lookback, json_path, symbols, verbosity, end: datetime | None = None, **options):
        config = StrategyConfig.current()
        if lookback is not None:
            _check_lookback(config, lookback)
        if end is not None:
            _check_end(config, _utc(end))
        json_path = writable_output_path("--json", json_path)
        wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()] or None
        bar = tqdm(total=0, unit="pair", disable=verbosity == 0, desc="screening")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        try:
            outcome = screening_run(config=config, lookback_bars=lookback, symbols=wanted, progress=progress,
                                    end=_utc(end))
        except ScreeningError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        run = outcome.run
        window = f"{run.window_start:%Y-%m-%d %H:%M}..{run.window_end:%Y-%m-%d %H:%M} UTC"
        audit_record(action="select_pairs", channel="command", actor_label=shell_operator("select_pairs"), target=run,
                     summary=f"screening run {run.pk}: {run.n_symbols} symbols, {window}, {run.n_candidates} "
                             f"confirmed candidates")
        self.stdout.write(
            f"run {run.pk}: {run.n_symbols} symbols, {window}, {run.n_tests} tests, "
            f"{run.n_passed} passed (family p<={config.max_pvalue}, q<={config.max_qvalue}), "
            f"{run.n_candidates} confirmed candidates, {run.duration_seconds:.1f}s"
        )
        if json_path:
            output_write("--json", json_path, json.dumps(outcome.as_json(), indent=1, allow_nan=False))
            self.stdout.write(f"wrote {json_path}")
        end_without_teardown()  # all is stored and written: the interpreter's teardown would only add latency


def _check_lookback(config: StrategyConfig, lookback: int) -> None:
    """A window no longer than the stored candles span: a longer one can't be filled, and an absurd one would be
    allocated as a grid of that many bars before anything noticed (or overflow the calendar)."""
    if lookback <= 0:
        raise CommandError(f"--lookback must be a positive number of bars, got {lookback}")
    first, last = candle_bounds(exchange=config.exchange, timeframe=config.timeframe)
    if first is None:
        return  # the screening says that no symbol has the history, and what to do about it
    stored = (last - first) // timedelta(milliseconds=timeframe_ms(config.timeframe)) + 1
    if lookback > stored:
        raise CommandError(
            f"--lookback {lookback} is more than the {stored} bars the stored {config.timeframe} candles of "
            f"{config.exchange} span ({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC)"
        )


def _check_end(config: StrategyConfig, end: datetime) -> None:
    """No window after the newest stored bar: its validation bars, the formation's last ``validation_bars``, would be
    bars nobody has, and a run ending there was stored as a screening with a validation in the future."""
    last = candle_bounds(exchange=config.exchange, timeframe=config.timeframe)[1]
    if last is not None and end > last:
        raise CommandError(f"--end {end:%Y-%m-%dT%H:%M} is after the newest stored {config.timeframe} bar of "
                           f"{config.exchange}, {last:%Y-%m-%dT%H:%M} UTC")


def _utc(moment: datetime | None) -> datetime | None:
    """A moment passed in-process (``call_command(end=...)``, which argparse doesn't see) is UTC when naive."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
