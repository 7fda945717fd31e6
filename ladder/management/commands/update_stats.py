import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.audit import audit_record
from core.commands import output_write, shell_operator, utc_moment, writable_output_path
from core.market_clock import market_clock
from ladder.services import pair_statistics_update
from pairs.market import stored_clock_end
from pairs.marketdata.validation import timeframe_ms
from pairs.models import StrategyConfig
from pairs.selectors import candle_bounds
from pairs.services.maintenance import selection_maintenance


class Command(BaseCommand):
    help = (
        "Sanity checks and cleanup, then backtest every pair in sample and on its validation bars, collect its "
        "live results, store the statistics and move each pair on the level ladder (audited)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write the grading to FILE")
        parser.add_argument("--end", type=utc_moment, default=None,
                            help="open time (UTC) of the backtests' last bar, e.g. 2021-07-24T23:00 (default: the "
                                 "newest stored bar)")

    def handle(self, *args, json_path: Path | None, end: datetime | None = None, **options):
        json_path = writable_output_path("--json", json_path)  # before anything is stored, not after
        config = StrategyConfig.current()
        if end is not None and end.tzinfo is None:  # passed in-process (call_command), which argparse doesn't see
            end = end.replace(tzinfo=UTC)
        if end is not None:
            _check_end(end, config)
        # The checks run at the grading's moment: with --end, when that bar closed (nothing after it is read).
        now = end + timedelta(milliseconds=timeframe_ms(config.timeframe)) if end else market_clock().now()
        end = end or stored_clock_end(config.timeframe)
        maintenance = selection_maintenance(config=config, now=now)
        self.stdout.write("maintenance: " + ", ".join(f"{k}={v}" for k, v in maintenance.as_dict().items()))
        outcome = pair_statistics_update(config=config, end=end)
        data = outcome.as_json()
        data["maintenance"] = maintenance.as_dict()
        # A hand run moves pairs between levels as beat's grading does (a demoted pair's trade closes at the next
        # tick): the trail says who ran it, the level changes say what moved.
        audit_record(action="update_stats", channel="command", actor_label=shell_operator("update_stats"),
                     summary=f"{data['n_pairs']} pair(s) graded up to {end or 'the newest bar'}: "
                             f"{data['promoted']} promoted, {data['demoted']} demoted",
                     details={"end": str(end or ""), "promoted": data["promoted"], "demoted": data["demoted"]})
        self.stdout.write(
            f"{data['n_pairs']} pair(s) graded: {data['promoted']} promoted, {data['demoted']} demoted "
            f"({outcome.duration_seconds:.1f}s)"
        )
        if json_path:
            output_write("--json", json_path, json.dumps(data, indent=1, default=str))
            self.stdout.write(f"wrote {json_path}")


def _check_end(end: datetime, config: StrategyConfig) -> None:
    """A grading ending after the newest stored bar has no validation bars to weigh: it replaced every pair's
    statistics with none (a mistyped year erased them all), and read missing trades as failing ones."""
    newest = candle_bounds(exchange=config.exchange, timeframe=config.timeframe)[1]
    if newest is None:
        raise CommandError(f"--end {end:%Y-%m-%dT%H:%M}: no {config.timeframe} candles of {config.exchange} are stored")
    if end > newest:
        raise CommandError(f"--end {end:%Y-%m-%dT%H:%M} is after the newest stored {config.timeframe} bar of "
                           f"{config.exchange}, {newest:%Y-%m-%dT%H:%M} UTC: nothing is graded or stored")
