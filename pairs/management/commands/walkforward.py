"""``python manage.py walkforward``: the whole selection pipeline over rolling periods of stored candles, forward in
time (``pairs.quant.walkforward``), with the current settings or each point of a parameter grid."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import finite_number, writable_output_path
from pairs.marketdata.validation import timeframe_ms
from pairs.models import StrategyConfig
from pairs.quant.fills import check_delay
from pairs.quant.walkforward_report import SELECT_ON
from pairs.services.walkforward import (
    WalkForwardError,
    grid_points,
    report_html,
    walkforward_params,
    walkforward_run,
)


def parse_moment(value: str | None, option: str, *, end_of_day: bool, bar: timedelta) -> datetime | None:
    """An ISO 8601 date or date-time, UTC unless it says otherwise; a bare date as --end means its last bar."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 date (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end_of_day and len(value) == 10:
        moment += timedelta(days=1) - bar
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise CommandError(f"{option} {value!r} is outside the dates this program handles") from None


class Command(BaseCommand):
    help = (
        "Walk-forward evaluation on stored candles, forward in time: every period (weekly by default) screens the "
        "formation window (the screening window, point-in-time universe), validates the candidates on the bars "
        "after it, traded on the z-score the trading uses (rolling by default), grades them on that validation "
        "only, then trades the next period. "
        "Reports per period and overall, for the candidate pool and each level: trades, win rate, profit factor "
        "with a bootstrap 95% interval, Sharpe and deflated Sharpe; with --grid, the nested selection (parameters "
        "chosen on earlier periods only) and the probability of backtest overfitting. Reads only."
    )
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--start", default=None,
                            help="first traded day (or date-time), UTC; default: the first bar with a full "
                                 "formation + validation history")
        parser.add_argument("--end", default=None, help="last traded day (inclusive), UTC; default: the last bar")
        parser.add_argument("--symbols", default="", help="comma-separated symbols (default: every stored symbol)")
        parser.add_argument("--grid", type=Path, default=None,
                            help="JSON or YAML file: a list of parameter points, each changing the current settings")
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write the report to FILE")
        parser.add_argument("--report", dest="report_path", type=Path, default=None,
                            help="write a self-contained HTML report to FILE")
        parser.add_argument("--every-days", type=float, default=7.0, help="days between re-formations (default 7)")
        parser.add_argument("--execution-delay-bars", type=int, default=None,
                            help="fill at the open of the bar 1 + N after the signal bar (default: the strategy "
                                 "configuration's execution_delay_bars); every point of a grid uses it unless the "
                                 "grid sets it")
        parser.add_argument("--select-on", choices=SELECT_ON, default="levels",
                            help="book the nested selection and the PBO rank points on (default: levels)")

    def handle(self, *args, start, end, symbols, grid, json_path, report_path, every_days, select_on, verbosity,
               execution_delay_bars, **options):
        config = StrategyConfig.current()
        bar = timedelta(milliseconds=timeframe_ms(config.timeframe))
        start_at = parse_moment(start, "--start", end_of_day=False, bar=bar)
        end_at = parse_moment(end, "--end", end_of_day=True, bar=bar)
        if start_at and end_at and end_at <= start_at:
            raise CommandError(f"--end {end} is not after --start {start}")
        finite_number("--every-days", every_days, minimum=1 / 12, maximum=366, unit="days")
        json_path = writable_output_path("--json", json_path)
        report_path = writable_output_path("--report", report_path)
        wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()] or None
        if execution_delay_bars is not None:
            try:
                check_delay(execution_delay_bars)
            except ValueError as exc:
                raise CommandError(f"--execution-delay-bars: {exc}") from None
        try:
            base = walkforward_params(config, execution_delay_bars=execution_delay_bars)
            points, values = grid_points(grid, base) if grid else ([base], None)
        except WalkForwardError as exc:
            raise CommandError(str(exc)) from None
        progress = tqdm(unit="period", disable=verbosity == 0, desc="walk-forward")
        try:
            run = walkforward_run(config=config, start=start_at, end=end_at, symbols=wanted, points=points,
                                  point_values=values, every_days=every_days, select_on=select_on,
                                  progress=progress.update)
        except WalkForwardError as exc:
            raise CommandError(str(exc)) from None
        finally:
            progress.close()
        self._summary(run)
        for option, path, text in (("--json", json_path, lambda: json.dumps(run.data, indent=1)),
                                   ("--report", report_path, lambda: report_html(run.data, settings=run.settings))):
            if path:
                try:
                    path.write_text(text())
                except OSError as exc:
                    raise CommandError(f"{option} {path}: could not be written ({exc.strerror or exc})") from None
                self.stdout.write(f"wrote {path}")

    def _summary(self, run) -> None:
        overall = run.data["overall"]
        parts = [f"pool: {_brief(overall['pool'])}"] + [f"L{n}: {_brief(s)}" for n, s in overall["levels"].items()]
        extra = _pbo_brief(overall, run.n_points)
        delay = run.data["execution"]["execution_delay_bars"]
        self.stdout.write(f"{run.n_periods} periods x {run.n_points} point(s), {len(run.market.symbols)} symbols, "
                          f"execution delay {delay} bar(s); "
                          + "; ".join(parts) + extra)


def _pbo_brief(overall: dict, n_points: int) -> str:
    """", PBO x (distinct points, blocks, days left out)" of a grid run; "" without a PBO."""
    detail = (overall.get("nested") or {}).get("pbo_detail")
    if overall.get("pbo") is None or not detail:
        return ""
    return (f", PBO {overall['pbo']:.2f} ({detail['points']} distinct of {n_points} points; {detail['n_splits']} "
            f"blocks of {detail['block_days']} days, the oldest {detail['dropped_days']} of {detail['days']} days "
            f"left out)")


def _brief(stats: dict) -> str:
    pf = "-" if stats["profit_factor"] is None else f"{stats['profit_factor']:.2f}"
    return f"{stats['trades']} trades, PF {pf}"
