import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.commands import shell_operator
from pairs.marketdata.files import CandleFileError
from pairs.marketdata.validation import TIMEFRAME_MS
from pairs.models import Instrument, StrategyConfig
from pairs.services.market_data import candles_import_directory


class Command(BaseCommand):
    help = (
        "Import candles from DIR, one file per symbol named like BTCUSDT.csv.gz (CSV, gzip CSV, Parquet or "
        "Feather; columns timestamp in ms, open, high, low, close, volume). Each file is read and validated whole "
        "and written in one transaction: a file that can't be read, fails validation or would change bars already "
        "stored (without --overwrite) leaves nothing behind and is reported, and the other files are still "
        "imported. The command fails at the end when any file was rejected."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--timeframe", default="1h", choices=sorted(TIMEFRAME_MS, key=TIMEFRAME_MS.get))
        parser.add_argument("--symbols", default="", help="comma-separated symbols (default: every file)")
        parser.add_argument("--exchange", default=None,
                            help="exchange the symbols belong to (default: the strategy configuration's, which the "
                                 "fetch and the screening read)")
        parser.add_argument(
            "--overwrite", action="store_true",
            help="replace stored bars whose values differ from the file's (default: refuse such a file)",
        )  # fmt: skip

    def handle(self, *args, directory: Path, timeframe: str, symbols: str, exchange: str, overwrite: bool,
               verbosity: int, **options):  # fmt: skip
        # The configuration's exchange, as the fetch and the screening use: with STATARB_EXCHANGE's, an exchange
        # changed in the admin left the imported candles under one the screening never reads.
        exchange = StrategyConfig.current().exchange if exchange is None else exchange
        longest = Instrument._meta.get_field("exchange").max_length
        if not re.fullmatch(rf"[a-z0-9_]{{1,{longest}}}", exchange):
            raise CommandError(f"--exchange {exchange!r}: a ccxt exchange id (lower-case letters, digits and '_', at "
                               f"most {longest} characters), e.g. bybit")
        wanted = [s for s in symbols.split(",") if s.strip()] or None

        def progress(result):
            if result.error:
                self.stderr.write(self.style.ERROR(f"REJECTED {result.error}"))
                if result.differing_bars:
                    self.stderr.write("  nothing of the file was stored; --overwrite replaces the stored bars")
            elif verbosity >= 1:
                self.stdout.write(result.report.summary())

        try:
            summary = candles_import_directory(
                directory=directory, timeframe=timeframe, exchange=exchange, symbols=wanted, overwrite=overwrite,
                progress=progress, actor_label=shell_operator("import_candles"),
            )  # fmt: skip
        except CandleFileError as exc:
            raise CommandError(str(exc)) from exc
        imported = len(summary.files) - len(summary.failed)
        self.stdout.write(f"{imported} file(s), {summary.rows} candle(s) imported ({timeframe}, {exchange}).")
        if summary.failed:
            names = ", ".join(f.path.name if f.path else f.symbol for f in summary.failed)
            raise CommandError(f"{len(summary.failed)} file(s) rejected: {names}")
