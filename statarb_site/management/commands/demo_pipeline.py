"""``python manage.py demo_pipeline``: the batch part of ``make demo`` (everything before the server starts)."""

import json
import os
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from execution.models import ExchangeAccount
from notifications.models import Notification
from pairs.marketdata.files import CandleFileError, candle_files
from pairs.models import Pair
from pairs.selectors import candle_bounds, symbols_with_candles
from pairs.services.market_data import candles_import_directory
from risk.selectors import limits_for

# The last two months (8 whole weeks of weekly walk-forward selections): on the shared data about 1,350 bars and 9
# selections, 1.5 to 2 minutes on these 2 cores.
DEMO_REPLAY_DAYS = 56
# The last days of the stored data are kept out of the batch (replay, screening, grading): the served demo's paper
# account trades them afterwards on the stored-data clock, which starts where the replay ended.
DEMO_HOLD_OUT_DAYS = 7
MAX_REPLAY_DAYS = 3650  # ten years of hourly bars; more reaches before the calendar's first day (OverflowError)
REPLAY_ACCOUNT = "replay"  # the replay's default paper account (replay sits beside this floor: named, not imported)
DATA_ENV = "STATARB_DATA_DIR"
DEMO_TIMEFRAME = "1h"  # the shared data's bars
STEPS = 4


class Command(BaseCommand):
    help = (
        "The demo's main job on the embedded default, with no network: import the candle files of --data "
        f"(default ${DATA_ENV}) once, replay {DEMO_REPLAY_DAYS} days walk-forward through the paper bot with the "
        "guard (var/demo-replay.json; its notifications printed to the console and kept in the database, not sent), "
        "screen the universe (var/demo-selection.json), grade the pairs (var/demo-levels.json), all up to "
        f"--hold-out-days ({DEMO_HOLD_OUT_DAYS}) before the newest bar (the served demo trades those on the "
        "stored-data clock), and print the replay's KPIs and the guard's halts. Fails, naming STATARB_DATA_DIR, "
        "when no candles are stored and the directory holds no candle files."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--data", type=Path, default=os.environ.get(DATA_ENV) or None,
            help=f"directory of hourly candle files named like BTCUSDT.csv.gz (default: ${DATA_ENV})",
        )  # fmt: skip
        parser.add_argument("--replay-days", type=int, default=DEMO_REPLAY_DAYS,
                            help=f"days replayed, up to the hold-out (default {DEMO_REPLAY_DAYS})")
        parser.add_argument("--hold-out-days", type=int, default=DEMO_HOLD_OUT_DAYS,
                            help="the last days of the stored data, kept out of the replay, the screening and the "
                                 "grading for the served demo's stored-data clock to trade (default "
                                 f"{DEMO_HOLD_OUT_DAYS}; 0: the batch reads up to the newest bar)")

    def handle(self, *args, data: Path | None, replay_days: int, hold_out_days: int = DEMO_HOLD_OUT_DAYS,
               verbosity: int, **options):
        if replay_days < 1:
            raise CommandError(f"--replay-days must be at least 1, got {replay_days}")
        if replay_days > MAX_REPLAY_DAYS:
            raise CommandError(f"--replay-days must be at most {MAX_REPLAY_DAYS}, got {replay_days}")
        if hold_out_days < 0:
            raise CommandError(f"--hold-out-days can't be negative, got {hold_out_days}")
        data = Path(data) if data is not None else None  # call_command passes options as given
        replay_json = settings.VAR_DIR / "demo-replay.json"
        self._step(1, "candles")
        self._candles_ensure(data, verbosity)
        first, newest = candle_bounds()
        span_days = (newest.date() - first.date()).days
        if hold_out_days > span_days:  # (and an absurd number of days overflowed the calendar: a traceback)
            raise CommandError(f"--hold-out-days {hold_out_days} holds out more than the {span_days} day(s) the stored "
                               f"candles span ({first:%Y-%m-%d} to {newest:%Y-%m-%d} UTC)")
        last_day = (newest - timedelta(days=hold_out_days)).date() if hold_out_days else None
        # The open of the batch's last hourly bar (None: the newest stored one); the served clock starts at its close.
        batch_end = datetime.combine(last_day, time(23), tzinfo=UTC) if last_day else None
        held_out = f" up to {last_day} (the last {hold_out_days} day(s) are held out for the served demo)" if last_day \
            else ""
        self._step(2, f"replay of {replay_days} day(s){held_out} through signals -> paper bot -> guard, notifications "
                      "printed here")
        replayed = not Pair.objects.exists()
        if replayed:
            # A replay needs a database without pairs (its walk-forward selection creates them): so only the first
            # run replays, and later runs show that replay's figures again.
            # replay_days whole days ending with the last day (the replay's end day is included: not one day more).
            start = ((last_day or newest.date()) - timedelta(days=replay_days - 1)).isoformat()
            end = {"end": last_day.isoformat()} if last_day else {}
            call_command("replay", start=start, account=REPLAY_ACCOUNT, json_path=replay_json, console=True,
                         verbosity=max(verbosity, 1), stdout=self.stdout, stderr=self.stderr, **end)  # fmt: skip
        elif replay_json.exists():
            self.stdout.write("kept: pairs exist, so the first run's replay stands (its figures are below)")
        else:
            # Said as kept, and the replay was never there: stopped half way (Ctrl-C), or pairs made before it.
            self.stderr.write(self.style.WARNING(
                f"not replayed: pairs exist (a replay needs a database without pairs) and {replay_json} is missing: "
                "the first run's replay did not finish, or the pairs were made before it (select_pairs); `make "
                "clean` starts over"))
        self._step(3, "screening the whole universe on the stored candles")
        window_end = {"end": batch_end} if batch_end else {}
        call_command("select_pairs", json_path=settings.VAR_DIR / "demo-selection.json", verbosity=max(verbosity, 1),
                     stdout=self.stdout, stderr=self.stderr, **window_end)  # fmt: skip
        self._step(4, "grading the pairs onto the level ladder")
        call_command("update_stats", json_path=settings.VAR_DIR / "demo-levels.json", stdout=self.stdout,
                     stderr=self.stderr, **window_end)  # fmt: skip
        self._print_replay_figures(replay_json, fresh=replayed)

    def _step(self, number: int, what: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"[{number}/{STEPS}] {what}"))

    def _candles_ensure(self, data: Path | None, verbosity: int) -> None:
        """Import the files of ``data`` unless candles are stored; CommandError naming STATARB_DATA_DIR when there is
        nothing to import. With candles stored, the files whose symbol has none are imported: an import stopped half
        way (Ctrl-C) has stored whole files only, and the demo went on with the symbols it had reached, saying only
        that candles were kept. The demo never fetches from the exchange: it must work without network."""
        first, last = candle_bounds()
        files = _data_files(data) if last is None else _files_not_stored(data)
        if last is not None:
            kept = f"kept: candles already stored ({first:%Y-%m-%d} to {last:%Y-%m-%d} UTC)"
            if not files:
                self.stdout.write(kept)
                return
            self.stdout.write(f"{kept}; importing the {len(files)} file(s) of {data} not stored yet (an import "
                              "stopped before the end)")
        bar = tqdm(total=len(files), unit="file", desc="import", disable=verbosity == 0)
        rejected: list[str] = []

        def progress(result) -> None:
            bar.update(1)
            if result.error:
                rejected.append(result.error)

        try:
            summary = candles_import_directory(directory=data, timeframe=DEMO_TIMEFRAME, symbols=list(files),
                                               exchange=settings.STATARB_EXCHANGE, progress=progress)  # fmt: skip
        finally:
            bar.close()
        self.stdout.write(f"{len(files) - len(rejected)} file(s), {summary.rows} candle(s) imported from {data}")
        if rejected:
            raise CommandError(f"{len(rejected)} candle file(s) rejected:\n  " + "\n  ".join(rejected))

    def _print_replay_figures(self, path: Path, *, fresh: bool) -> None:
        """The replay's KPIs and halts as its JSON holds them (computed by ``pairs.quant.kpis``, the metrics module
        of the dashboard and the API)."""
        heading = self.style.MIGRATE_HEADING
        if not path.exists():
            self.stdout.write(heading(f"No replay figures: {path} is missing (it is written by the first run)."))
            return
        data = json.loads(path.read_text())
        summary, halts = data["summary"], data["halts"]
        still_open = sum(1 for t in data["trades"] if t["opened_at"] and not t["closed_at"])
        when = "" if fresh else f" (replayed by an earlier run, {path.name})"
        self.stdout.write(heading(f"Replay KPIs, account '{REPLAY_ACCOUNT}'{when}:"))
        rows = [
            ("trades", f"{summary['total_trades']} finished, {still_open} still open"),
            ("win rate", _ratio(summary["win_rate"])),
            ("profit factor", "∞ (no losing trade)" if summary.get("profit_factor_unbounded")
             else _number(summary["profit_factor"])),
            ("return", _ratio(summary["total_return"], signed=True)
                       + f"  (equity {_money(summary['start_equity'])} -> {_money(summary['end_equity'])} USDT)"),
            ("max drawdown", _ratio(summary["max_drawdown"], signed=True)),
            ("Sharpe", _number(summary["sharpe"])),
        ]  # fmt: skip
        for label, value in rows:
            self.stdout.write(f"  {label:<14} {value}")
        self.stdout.write(heading(f"Guard halts: {len(halts)}") + _limits_text())
        for halt in halts:
            until = f", until {halt['until']}" if halt["until"] else ""
            self.stdout.write(f"  {halt['at']}  trigger {halt['trigger'] or '-'}{until}: {halt['reason']}")
        held = Notification.objects.filter(status=Notification.Status.HELD).count()
        self.stdout.write(f"Notifications kept in the database as held (not sent): {held}; "
                          "`manage.py replay --notify` sends a replay's notifications.")  # fmt: skip
        login = settings.VAR_DIR / "demo-login.txt"
        if login.exists():
            self.stdout.write(f"Dashboard login: user and password in {login}")


def _data_files(data: Path | None) -> dict[str, Path]:
    """The candle files of ``data``; CommandError naming STATARB_DATA_DIR when there are none."""
    fix = (
        f"Set {DATA_ENV} to a directory of hourly candle files named like BTCUSDT.csv.gz (columns timestamp in ms, "
        "open, high, low, close, volume), e.g. the shared data beside the clone: "
        f"{DATA_ENV}=../shared/data/binance-usdt-1h-2021 make demo. The demo does not fetch candles from the "
        "exchange (it runs without network)."
    )
    if data is None:
        raise CommandError(f"no candles stored and {DATA_ENV} is not set. {fix}")
    try:
        files = candle_files(data)
    except CandleFileError as exc:
        raise CommandError(f"no candles stored and {DATA_ENV}={data} is unusable ({exc}). {fix}") from None
    if not files:
        where = f"{data} ({data.resolve()})" if str(data) != str(data.resolve()) else str(data)
        raise CommandError(f"no candles stored and {DATA_ENV}={where} holds no candle file. {fix}")
    return files


def _files_not_stored(data: Path | None) -> dict[str, Path]:
    """The candle files of ``data`` whose symbol has no stored bar; none when ``data`` is unset or unusable (the
    stored candles are enough for the demo then)."""
    try:
        files = candle_files(data) if data is not None else {}
    except CandleFileError:
        return {}
    stored = symbols_with_candles(exchange=settings.STATARB_EXCHANGE, timeframe=DEMO_TIMEFRAME)
    return {symbol: path for symbol, path in files.items() if symbol not in stored}


def _limits_text() -> str:
    """The replay account's daily loss and drawdown limits, as the guard applied them."""
    account = ExchangeAccount.objects.filter(name=REPLAY_ACCOUNT).first()
    if account is None:
        return ""
    limits = limits_for(account)
    parts = [f"{label} {value:.2%}" for label, value in (("daily loss limit", limits.daily_loss_limit_pct),
                                                           ("max drawdown", limits.max_drawdown_pct)) if value]
    return f"  ({', '.join(parts)})" if parts else "  (no loss limits set)"


def _money(text: str) -> str:
    return f"{Decimal(text).quantize(Decimal('0.01'))}"


def _ratio(value: float | None, *, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.2%}" if signed else f"{value:.2%}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
