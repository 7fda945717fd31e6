from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from exchanges.errors import ExchangeError
from exchanges.factory import market_data_exchange
from pairs.marketdata.validation import TIMEFRAME_MS
from pairs.models import Instrument, StrategyConfig
from pairs.selectors import candle_fetch_instruments
from pairs.services.market_data import candles_fetch, universe_refresh


class Command(BaseCommand):
    help = (
        "Refresh the universe (instruments, filters, 24h turnover) from the exchange and fetch closed candles "
        "incrementally from the last stored bar (or the configured backfill) up to now."
    )

    def add_arguments(self, parser):
        parser.add_argument("--symbols", default="",
                            help="comma-separated symbols (default: the universe and the active pairs' legs)")
        parser.add_argument("--skip-universe", action="store_true", help="don't refresh instruments first")
        parser.add_argument("--timeframe", default=None, choices=sorted(TIMEFRAME_MS, key=TIMEFRAME_MS.get),
                            help="default: the strategy configuration's")

    def handle(self, *args, symbols: str, skip_universe: bool, timeframe: str | None, **options):
        config = StrategyConfig.current()
        timeframe = timeframe or config.timeframe
        client = market_data_exchange(config.exchange)
        try:
            if not skip_universe:
                sync = universe_refresh(exchange_client=client, exchange=config.exchange, quote=config.quote)
                self.stdout.write(
                    f"universe: {len(sync.created)} new, {len(sync.updated)} updated, {len(sync.delisted)} delisted"
                )
        except ExchangeError as exc:
            raise CommandError(f"could not load instruments from {config.exchange}: {exc}") from exc
        if symbols:
            wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()]
            instruments = list(Instrument.objects.filter(exchange=config.exchange, symbol__in=wanted))
            missing = sorted(set(wanted) - {i.symbol for i in instruments})
            if missing:
                raise CommandError(f"unknown symbol(s) on {config.exchange}: {', '.join(missing)}")
        else:
            instruments = candle_fetch_instruments(config=config)
        with tqdm(total=len(instruments), unit="symbol", disable=options["verbosity"] == 0) as bar:
            def progress(result):
                bar.update(1)
                bar.set_postfix_str(result.symbol)
            results = candles_fetch(exchange_client=client, instruments=instruments, timeframe=timeframe,
                                    backfill_bars=config.backfill_bars, progress=progress)
        failed = [r for r in results if r.error]
        self.stdout.write(f"{sum(r.rows for r in results)} candle(s) stored for {len(results)} symbol(s).")
        for result in failed:
            self.stderr.write(self.style.ERROR(f"{result.symbol}: {result.error}"))
        if failed:
            raise CommandError(f"{len(failed)} symbol(s) failed")
