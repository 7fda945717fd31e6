"""``python manage.py replay``: the live engine over stored candles, bar by bar, walk-forward."""

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import finite_number, output_write, writable_output_path
from execution.models import ExchangeAccount
from notifications.channels import ConsoleChannel, Message
from notifications.models import Notification
from notifications.services import notifications_echoed
from pairs.marketdata.validation import timeframe_ms
from pairs.models import StrategyConfig
from pairs.quant.fills import MAX_EXECUTION_DELAY_BARS
from replay.run import (
    DEFAULT_ACCOUNT_NAME,
    DEFAULT_RESELECT_EVERY,
    ReplayError,
    replay_default_range,
    replay_run,
)

QUIET_LOGGERS = ("execution.paper.exchange", "execution.services.bot", "execution.services.replay")
# Ten years between selections is "select once": more is a typo, and timedelta overflows near 2.7 million years.
MAX_RESELECT_EVERY_DAYS = 3650


def parse_moment(value: str, option: str, *, end_of_day: bool, bar: timedelta) -> datetime:
    """An ISO 8601 date or date-time, UTC unless it says otherwise. A bare date as ``--end`` means its last bar."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if end_of_day and len(value) == 10:  # YYYY-MM-DD
            moment += timedelta(days=1) - bar
        return moment.astimezone(UTC)
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 date (YYYY-MM-DD, or YYYY-MM-DDTHH:MM in UTC)"
        ) from None
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first day a datetime holds, in UTC
        raise CommandError(f"{option} {value!r} is outside the dates this program handles (years 1 to 9999)") from None


class Command(BaseCommand):
    help = (
        "Replay stored candles through the live engine (signals -> bot -> paper exchange) bar by bar, walk-forward: "
        "screening and grading every --reselect-every-days on the bars before the clock only. Trades, orders, fills "
        f"and notifications are written to the database on a paper account ({DEFAULT_ACCOUNT_NAME!r}, created on "
        "level 1 with 10,000 USDT if missing). Run it on a database holding only imported candles. --json writes "
        "the summary and every trade with its fills: money, quantities and prices as strings (exact decimals), "
        "ratios as numbers, times in ISO 8601 UTC. One replay at a time: while one runs, another is refused."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--start", default=None,
            help="first day (or date-time) replayed, UTC; default: the first bar with a full selection history "
                 "behind it (lookback or min_history_bars, + validation_bars)",
        )  # fmt: skip
        parser.add_argument("--end", default=None, help="last day replayed (inclusive), UTC; default: the last bar")
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write summary + trades to FILE")
        parser.add_argument(
            "--reselect-every-days", type=float, default=DEFAULT_RESELECT_EVERY / timedelta(days=1),
            help=f"days between walk-forward selections (default 7, at most {MAX_RESELECT_EVERY_DAYS}); 0 trades the "
                 "pairs in the database as they are",
        )  # fmt: skip
        parser.add_argument("--account", default=DEFAULT_ACCOUNT_NAME, help="paper account to replay on")
        parser.add_argument(
            "--daily-loss-limit", type=float, default=None, metavar="PCT",
            help="daily loss limit of the replay account, percent of start-of-day equity (0 to 100); the guard "
                 "halts entries until the next UTC midnight once it is crossed",
        )  # fmt: skip
        parser.add_argument(
            "--execution-delay-bars", type=int, default=None, metavar="N",
            help="fill a decision taken at a bar's close at the open of the bar N + 1 bars later (0: the next "
                 f"bar's open; at most {MAX_EXECUTION_DELAY_BARS}); default: the strategy configuration's "
                 "execution_delay_bars. Not saved. The report adds the vectorised backtest of the traded pairs at "
                 "0 and 1 bar of delay either way",
        )  # fmt: skip
        parser.add_argument(
            "--notify", action="store_true",
            help="send the replay's notifications (trades, errors) like live ones; by default they are kept in the "
                 "database as held and never sent",
        )  # fmt: skip
        parser.add_argument(
            "--console", action="store_true",
            help="also print each of the replay's notifications to the console once its bar is committed (they "
                 "stay held in the database unless --notify)",
        )  # fmt: skip

    def handle(self, *args, start, end, json_path, reselect_every_days, account, verbosity, daily_loss_limit=None,
               notify=False, console=False, execution_delay_bars=None, **options):
        config = StrategyConfig.current()
        if execution_delay_bars is not None:
            finite_number("--execution-delay-bars", execution_delay_bars, minimum=0,
                          maximum=MAX_EXECUTION_DELAY_BARS, unit="bars")
        self._check_reselect_every(config, reselect_every_days)
        if daily_loss_limit is not None:
            finite_number("--daily-loss-limit", daily_loss_limit, minimum=0, maximum=100, unit="percent")
        json_path = writable_output_path("--json", json_path)
        start_at, end_at = self._range(config, start, end)
        target = ExchangeAccount.objects.filter(name=account).first()
        if target is None and account != DEFAULT_ACCOUNT_NAME:
            raise CommandError(f"no account named {account!r}")
        with notifications_echoed(self._console_echo() if console else None):
            result = self._run(config, start_at, end_at, target, reselect_every_days, verbosity,
                               None if daily_loss_limit is None else daily_loss_limit / 100, notify,
                               execution_delay_bars)
        data = result.as_json()
        self._print_summary(result, data)
        if json_path:
            output_write("--json", json_path, json.dumps(data, indent=1))
            self.stdout.write(f"wrote {json_path}")

    def _console_echo(self):
        """Each notification as a console line on this command's stdout, the progress bar cleared around it."""
        channel = ConsoleChannel(write=self._write_beside_progress)

        def echo(notification: Notification) -> None:
            channel.send("console", Message(notification.topic, notification.severity, notification.text))

        return echo

    def _write_beside_progress(self, text: str) -> None:
        with tqdm.external_write_mode():
            self.stdout.write(text)
            self.stdout.flush()

    @staticmethod
    def _check_reselect_every(config: StrategyConfig, days: float) -> None:
        """0 (no selection) or a finite number of days from one bar to MAX_RESELECT_EVERY_DAYS. argparse's float
        takes "nan" and "inf" (timedelta then raises); a positive value under one bar selects at every bar anyway,
        and under a microsecond it rounds to zero and would silently turn the selection off."""
        finite_number("--reselect-every-days", days, minimum=0, maximum=MAX_RESELECT_EVERY_DAYS, unit="days")
        bar = timedelta(milliseconds=timeframe_ms(config.timeframe))
        if 0 < days and timedelta(days=days) < bar:
            raise CommandError(
                f"--reselect-every-days {days:g} is shorter than one {config.timeframe} bar: 0 (no selection) or at "
                f"least {bar / timedelta(days=1):g}"
            )

    def _range(self, config: StrategyConfig, start: str | None, end: str | None) -> tuple[datetime, datetime]:
        """The replayed range from the options, the stored candles filling in what is not given."""
        bar = timedelta(milliseconds=timeframe_ms(config.timeframe))
        first_start = last_end = None
        try:
            first_start, last_end = replay_default_range(config)
        except ReplayError as exc:
            if start is None or end is None:
                raise CommandError(str(exc)) from exc
        start_at = parse_moment(start, "--start", end_of_day=False, bar=bar) if start else first_start
        end_at = parse_moment(end, "--end", end_of_day=True, bar=bar) if end else last_end
        if start_at > end_at:
            raise CommandError(f"--start {start_at:%Y-%m-%d %H:%M} is after --end {end_at:%Y-%m-%d %H:%M} (UTC)")
        # A --start without the history the first selection reads is refused by the run (replay_run).
        return start_at, end_at

    def _run(self, config: StrategyConfig, start_at: datetime, end_at: datetime, target: ExchangeAccount | None,
             reselect_every_days: float, verbosity: int, daily_loss_limit_pct: float | None, notify: bool = False,
             execution_delay_bars: int | None = None):
        progress_bar = tqdm(total=0, unit="bar", disable=verbosity == 0, desc="replay")

        def progress(done: int, total: int) -> None:
            progress_bar.total = total
            progress_bar.update(done - progress_bar.n)

        # One line per paper fill and per skipped entry is too much beside a progress bar: -v 2 shows them.
        quiet = [logging.getLogger(name) for name in QUIET_LOGGERS] if verbosity < 2 else []
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        try:
            return replay_run(
                start=start_at, end=end_at, config=config, account=target,
                reselect_every=timedelta(days=reselect_every_days) or None, progress=progress,
                daily_loss_limit_pct=daily_loss_limit_pct, notify=notify, execution_delay_bars=execution_delay_bars,
            )  # fmt: skip
        except ReplayError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            progress_bar.close()
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)

    def _print_summary(self, result, data: dict) -> None:
        summary = data["summary"]
        still_open = sum(1 for t in data["trades"] if t["opened_at"] and not t["closed_at"])
        self.stdout.write(
            f"replay on {result.account.name!r}: {result.bars} bars, {result.start:%Y-%m-%d %H:%M} to "
            f"{result.end:%Y-%m-%d %H:%M} UTC, {len(result.selection_runs)} selection(s), {result.seconds:.1f}s"
        )
        self.stdout.write(
            f"{summary['total_trades']} finished trade(s) ({still_open} still open), win rate "
            f"{_ratio(summary['win_rate'])}, profit factor "
            f"{'∞ (no losing trade)' if summary.get('profit_factor_unbounded') else _number(summary['profit_factor'])}"
            f", return "
            f"{_ratio(summary['total_return'])}, max drawdown {_ratio(summary['max_drawdown'])}, Sharpe "
            f"{_number(summary['sharpe'])}; equity {summary['start_equity']} -> {summary['end_equity']}"
        )
        delay = data.get("execution_delay")
        if delay is not None:
            figures = "; ".join(
                f"delay {bars}: {kpis['trades']} trade(s), win rate {_ratio(kpis['win_rate'])}, profit factor "
                f"{_number(kpis['profit_factor'])}, mean return per trade {_ratio(kpis['mean_return'])}"
                for bars, kpis in delay["backtest"].items()
            )
            # Per trade, not an account's return: every traded pair on every bar, with no capital, level or
            # concurrency limit, so a sum of its returns would read as a return the account never had. And in
            # sample: the pairs are those the replay chose to trade, backtested on bars before it chose them too;
            # only the difference between the delays is a measurement.
            self.stdout.write(
                f"execution: fills at the next bar's open + {delay['replay_delay_bars']} bar(s) of delay; vectorised "
                f"backtest of the {len(delay['pairs'])} traded pair(s) over the replayed bars (per trade, y notional "
                f"1, each pair on every bar: not the account's return; in sample, the bars before each pair was "
                f"chosen included: read the difference between the delays, not the figures) at {figures}"
            )
        halts = data["halts"]
        self.stdout.write(f"guard: {len(halts)} halt(s), {len(data['guard_events'])} event(s)")
        for halt in halts:
            until = f" until {halt['until']}" if halt["until"] else ""
            self.stdout.write(f"  halt at {halt['at']} (trigger {halt['trigger'] or '-'}){until}: {halt['reason']}")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
