"""A small market for bot tests: two instruments with candles, a pair on the account's level, signals, a paper
account, and a tick function that runs the real engine against the paper exchange (or any TradingExchange)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.clock import ManualClock
from execution.bot.tick import bot_tick
from execution.models import ExchangeAccount, PairTrade, Signal, SignalState
from execution.paper.exchange import paper_exchange_for
from pairs.market import StoredMarket
from pairs.models import Candle, Pair, StrategyConfig
from tests.factories import ExchangeAccountFactory, InstrumentFactory, LevelFactory, PairFactory

HOUR = timedelta(hours=1)
START = datetime(2021, 3, 1, tzinfo=UTC)


class BotWorld:
    def __init__(self, *, y_price="100", x_price="50", hedge_ratio=0.85, budget="500", owner="bot-1", start=START,
                 **account):
        # get-or-create: a transactional test's flush removes the levels the data migration seeded
        # A real account trades a level that trades real capital: level 3 (its whole budget, as paper on level 1).
        real = account.get("mode") == ExchangeAccount.Mode.REAL
        self.level = LevelFactory(number=3, name="full live") if real else LevelFactory(number=1, name="paper")
        self.y = InstrumentFactory(base="YYY", qty_step=Decimal("0.01"), min_qty=Decimal("0.01"))
        self.x = InstrumentFactory(base="XXX", qty_step=Decimal("0.01"), min_qty=Decimal("0.01"))
        self.pair = PairFactory(y_instrument=self.y, x_instrument=self.x, level=self.level, hedge_ratio=hedge_ratio)
        self.account = ExchangeAccountFactory(level=self.level, per_trade_budget=Decimal(budget), **account)
        self.config = StrategyConfig.current()
        self.owner = owner
        self.bar = start
        self.prices = {self.y.pk: Decimal(y_price), self.x.pk: Decimal(x_price)}
        self._write_bar()

    # ----------------------------------------------------------------------------------------- market and signals
    def _write_bar(self) -> None:
        for instrument_id, price in self.prices.items():
            Candle.objects.update_or_create(
                instrument_id=instrument_id, timeframe="1h", open_time=self.bar,
                defaults={"open": price, "high": price, "low": price, "close": price, "volume": 1},
            )

    def next_bar(self, *, y: str | None = None, x: str | None = None, action: str | None = None,
                 zscore: float = 0.0, position: int | None = None, hedge_ratio: float | None = None) -> datetime:
        """Close one more bar (optionally with new prices) and, if given, the rule's signal on it."""
        self.bar += HOUR
        if y is not None:
            self.prices[self.y.pk] = Decimal(y)
        if x is not None:
            self.prices[self.x.pk] = Decimal(x)
        self._write_bar()
        if action is not None:
            self.signal(action, zscore=zscore, position=position, hedge_ratio=hedge_ratio)
        return self.bar

    def signal(self, action: str, *, zscore: float = 0.0, position: int | None = None, pair: Pair | None = None,
               hedge_ratio: float | None = None) -> Signal:
        pair = pair or self.pair
        if position is None:
            position = {Signal.Action.ENTER_LONG: 1, Signal.Action.ENTER_SHORT: -1}.get(action, 0)
        signal = Signal.objects.create(pair=pair, timeframe="1h", bar_time=self.bar, zscore=zscore, spread=0.0,
                                       hedge_ratio=hedge_ratio, action=action)
        SignalState.objects.update_or_create(pair=pair, defaults={"last_bar_time": self.bar, "position": position})
        return signal

    # ---------------------------------------------------------------------------------------------------- ticking
    @property
    def now(self) -> datetime:
        return self.bar + HOUR  # the bar at self.bar has closed

    def paper_exchange(self, now: datetime | None = None):
        market = StoredMarket(timeframe="1h", clock=ManualClock(now or self.now))
        return paper_exchange_for(self.account, market=market, config=self.config), market

    def tick(self, *, exchange=None, owner: str | None = None, checkpoint=None, now: datetime | None = None):
        now = now or self.now
        self.account.refresh_from_db()
        if exchange is None:
            exchange, market = self.paper_exchange(now)
        else:
            market = StoredMarket(timeframe="1h", clock=ManualClock(now))
        return bot_tick(account=self.account, exchange=exchange, market=market, config=self.config,
                        owner=owner or self.owner, checkpoint=checkpoint, sleep=lambda s: None)

    def trades(self) -> list[PairTrade]:
        return list(PairTrade.objects.filter(account=self.account).order_by("pk"))

    def trade(self) -> PairTrade:
        trades = self.trades()
        assert len(trades) == 1, trades
        return trades[0]

    @staticmethod
    def paper_positions(account: ExchangeAccount) -> dict[str, Decimal]:
        return {p.symbol: p.qty for p in account.paper_positions.all() if p.qty}
