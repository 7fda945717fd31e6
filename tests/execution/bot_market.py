"""A large market for the bot's query-count test and its benchmark (benchmarks/bench_bot_tick.py): many instruments
with recent candles, many pairs on the account's level with a signal and a rule state each, and trades opened by
the engine itself against the paper exchange, so that their orders, fills, paper positions and paper orders are
exactly what live trading leaves behind. Market rows are written with bulk_create; only the trades go through the
engine (one tick opens them all).

Plain ORM only (no factory_boy), so the benchmark can use it outside pytest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.clock import ManualClock
from execution.bot.lease import lease_release
from execution.bot.tick import TickReport, bot_tick
from execution.models import BotHeartbeat, ExchangeAccount, PairTrade, Signal, SignalState
from execution.paper.exchange import paper_exchange_for
from pairs.market import StoredMarket
from pairs.models import Candle, Instrument, Level, Pair, StrategyConfig

HOUR = timedelta(hours=1)
# The first bar; its tick (one hour later) is at 00:00 UTC, right on a funding settlement, so the paper wallet
# starts settled there and the next settlement (08:00) is eight bars away: ticks before it settle no funding.
START = datetime(2021, 2, 28, 23, tzinfo=UTC)
TIMEFRAME = "1h"


class BotMarket:
    """One paper account on ``level_number`` and its market on the exchange id ``exchange``."""

    def __init__(
        self,
        *,
        exchange: str = "bybit",
        name: str = "q",
        level_number: int = 1,
        owner: str = "bot-q",
        start: datetime = START,
        capital: str = "10000000",
        budget: str = "500",
    ):
        self.exchange = exchange
        self.name = name
        self.owner = owner
        # get-or-create: a transactional test's flush removes the levels the data migration seeded
        self.level, _ = Level.objects.get_or_create(number=level_number, defaults={"name": f"level {level_number}"})
        self.account = ExchangeAccount.objects.create(
            name=f"{name}-paper",
            exchange=exchange,
            mode=ExchangeAccount.Mode.PAPER,
            level=self.level,
            capital=Decimal(capital),
            per_trade_budget=Decimal(budget),
            max_concurrent_trades=100_000,
        )
        self.account.refresh_from_db()  # the decimals as the database gives them back (leverage defaults to 1)
        self.config = StrategyConfig.current()
        if self.config.timeframe != TIMEFRAME:
            raise ValueError(f"the strategy configuration's timeframe is {self.config.timeframe}, not {TIMEFRAME}")
        self.bar = start
        self.instruments: list[Instrument] = []
        self.pairs: list[Pair] = []
        self.traded: list[Pair] = []  # pairs whose rule holds a position (each with an active trade)
        self._ever_traded: set[int] = set()
        self._used: set[tuple[int, int]] = set()

    # ----------------------------------------------------------------------------------------------- the market
    def _write_candles(self, instruments: list[Instrument]) -> None:
        rows = []
        for k, instrument in enumerate(instruments):
            price = Decimal(10 + k % 90)
            rows.append(
                Candle(
                    instrument=instrument,
                    timeframe=TIMEFRAME,
                    open_time=self.bar,
                    open=price,
                    high=price,
                    low=price,
                    close=price,
                    volume=Decimal(1000),
                )
            )
        Candle.objects.bulk_create(rows, batch_size=1000)

    def _write_signals(self, actions: dict[int, str]) -> None:
        """A signal at the current bar for every pair (``actions`` by pair id, else hold), and the rule states'
        bar moved to it."""
        Signal.objects.bulk_create(
            [
                Signal(
                    pair=pair,
                    timeframe=TIMEFRAME,
                    bar_time=self.bar,
                    zscore=self._zscore(actions.get(pair.pk)),
                    spread=0.0,
                    action=actions.get(pair.pk, Signal.Action.HOLD),
                )
                for pair in self.pairs
            ],
            batch_size=1000,
        )
        SignalState.objects.filter(pair__in=self.pairs).update(last_bar_time=self.bar)

    @staticmethod
    def _zscore(action: str | None) -> float:
        return {Signal.Action.ENTER_LONG: -2.2, Signal.Action.ENTER_SHORT: 2.2, Signal.Action.EXIT: 0.1}.get(
            action, 0.5
        )

    def next_bar(self, actions: dict[int, str] | None = None, positions: dict[int, int] | None = None) -> datetime:
        """Close one more bar: a candle for every instrument, a signal for every pair (hold unless ``actions`` says
        otherwise) and the rule's new ``positions`` (by pair id)."""
        self.bar += HOUR
        self._write_candles(self.instruments)
        self._write_signals(actions or {})
        self.set_positions(positions or {})
        return self.bar

    def set_positions(self, positions: dict[int, int]) -> None:
        for position in (-1, 0, 1):
            ids = [pk for pk, p in positions.items() if p == position]
            if ids:
                SignalState.objects.filter(pair_id__in=ids).update(position=position)

    def grow(self, *, instruments: int, pairs: int, trades: int) -> TickReport:
        """Add ``instruments`` instruments and ``pairs`` pairs on the account's level (``trades`` of them on
        distinct fresh instruments, entered at the next bar), close that bar and tick: the engine opens the
        trades. Returns the opening tick's report."""
        if 2 * trades > instruments or trades > pairs:
            raise ValueError("every new trade needs two fresh instruments and a pair")
        first = len(self.instruments)
        base = self.name.upper()
        Instrument.objects.bulk_create(
            [
                Instrument(
                    exchange=self.exchange,
                    symbol=f"{base}{k}USDT",
                    ccxt_symbol=f"{base}{k}/USDT:USDT",
                    base=f"{base}{k}",
                    quote="USDT",
                    settle="USDT",
                    tick_size=Decimal("0.0001"),
                    qty_step=Decimal("0.01"),
                    min_qty=Decimal("0.01"),
                    min_notional=Decimal("5"),
                    funding_interval_minutes=480,
                )
                for k in range(first, first + instruments)
            ]
        )
        by_symbol = {i.symbol: i for i in Instrument.objects.filter(exchange=self.exchange)}
        new = [by_symbol[f"{base}{k}USDT"] for k in range(first, first + instruments)]
        self.instruments.extend(new)
        legs = [(new[2 * k], new[2 * k + 1]) for k in range(trades)]
        everyone = self.instruments
        offset = 1
        while len(legs) < pairs:  # more pairs over all instruments, each new instrument in turn as y
            for k, y in enumerate(new):
                x = everyone[(first + k + offset) % len(everyone)]
                key = (y.pk, x.pk)
                if y.pk != x.pk and key not in self._used and (y, x) not in legs:
                    legs.append((y, x))
                    if len(legs) == pairs:
                        break
            offset += 1
        self._used.update((y.pk, x.pk) for y, x in legs)
        Pair.objects.bulk_create(
            [
                Pair(
                    y_instrument=y,
                    x_instrument=x,
                    timeframe=TIMEFRAME,
                    status=Pair.Status.ACTIVE,
                    level=self.level,
                    hedge_ratio=0.85,
                    intercept=0.1,
                    pvalue=0.001,
                    qvalue=0.02,
                    half_life_bars=24.0,
                )
                for y, x in legs
            ],
            batch_size=1000,
        )
        by_legs = {
            (p.y_instrument_id, p.x_instrument_id): p
            for p in Pair.objects.filter(y_instrument__in=new, timeframe=TIMEFRAME)
        }
        fresh = [by_legs[(y.pk, x.pk)] for y, x in legs]
        SignalState.objects.bulk_create([SignalState(pair=p, last_bar_time=self.bar) for p in fresh], batch_size=1000)
        self.pairs.extend(fresh)
        entering = fresh[:trades]
        self.traded.extend(entering)
        self._ever_traded.update(p.pk for p in entering)
        actions = {
            p.pk: (Signal.Action.ENTER_LONG if k % 2 == 0 else Signal.Action.ENTER_SHORT)
            for k, p in enumerate(entering)
        }
        self.next_bar(actions, {p.pk: (1 if k % 2 == 0 else -1) for k, p in enumerate(entering)})
        report = self.tick()
        if report.status != "ok" or report.opened != trades:
            raise RuntimeError(f"the opening tick opened {report.opened} of {trades} trades: {report}")
        return report

    def rotate(self, *, opens: int, closes: int) -> None:
        """Close one more bar on which the ``closes`` oldest traded pairs signal an exit and ``opens`` untraded pairs
        signal an entry (pairs none of whose legs another trade holds, one trade per instrument as the engine
        wants; pairs never traded first); the next tick closes and opens those trades."""
        leaving = self.traded[:closes]
        held = {i for p in self.traded for i in (p.y_instrument_id, p.x_instrument_id)}
        entering = []
        for pair in sorted(self.pairs, key=lambda p: p.pk in self._ever_traded):
            legs = {pair.y_instrument_id, pair.x_instrument_id}
            if len(entering) < opens and not legs & held:
                entering.append(pair)
                held |= legs
        if len(leaving) < closes or len(entering) < opens:
            raise ValueError("not enough traded pairs, or pairs with both legs free")
        actions = {p.pk: Signal.Action.EXIT for p in leaving}
        actions.update({p.pk: Signal.Action.ENTER_LONG for p in entering})
        positions = {p.pk: 0 for p in leaving}
        positions.update({p.pk: 1 for p in entering})
        self.next_bar(actions, positions)
        self.traded = self.traded[closes:] + entering
        self._ever_traded.update(p.pk for p in entering)

    def bars_to_settlement(self, interval: timedelta = timedelta(hours=8)) -> None:
        """Close bars (holds, no ticks) until the current bar closes on a funding settlement time (00:00, 08:00,
        16:00 UTC): the next tick, at ``now()`` or a little later, settles funding."""
        self.next_bar()
        while (self.now() - datetime(1970, 1, 1, tzinfo=UTC)) % interval:
            self.next_bar()

    # ------------------------------------------------------------------------------------------------- ticking
    def now(self, seconds: float = 0) -> datetime:
        """The clock ``seconds`` after the current bar closed."""
        return self.bar + HOUR + timedelta(seconds=seconds)

    def tick(self, *, now: datetime | None = None, sleep: Callable[[float], None] = lambda s: None) -> TickReport:
        """One tick as the live task runs it: a market at the clock, a paper exchange priced from it, the engine."""
        market = StoredMarket(timeframe=TIMEFRAME, clock=ManualClock(now or self.now()))
        exchange = paper_exchange_for(self.account, market=market, config=self.config)
        return bot_tick(
            account=self.account,
            exchange=exchange,
            market=market,
            config=self.config,
            owner=self.owner,
            sleep=sleep,
        )

    def release_lease(self) -> None:
        """Let the lease go, so that the next tick takes it fresh (a restart) and reconciles."""
        lease_release(self.account, self.owner)

    def mark_reconciled(self, now: datetime) -> None:
        BotHeartbeat.objects.filter(account=self.account).update(reconciled_at=now)

    def active_trades(self) -> list[PairTrade]:
        return list(PairTrade.objects.filter(account=self.account, state__in=PairTrade.ACTIVE_STATES))
