"""factory_boy factories for every table the tests need. Levels come from the data migration, so the level
factory fetches the seeded rung instead of inserting a duplicate number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from execution.models import ExchangeAccount, Fill, Order, PairTrade, Signal
from notifications.models import Notification
from pairs.models import Candle, CointegrationRun, Instrument, Level, Pair
from risk.models import DailyPnlSnapshot, GuardEvent, Halt, RiskLimit


class InstrumentFactory(DjangoModelFactory):
    class Meta:
        model = Instrument
        django_get_or_create = ("exchange", "symbol")

    exchange = "bybit"
    base = factory.Sequence(lambda n: f"C{n}")
    symbol = factory.LazyAttribute(lambda o: f"{o.base}USDT")
    ccxt_symbol = factory.LazyAttribute(lambda o: f"{o.base}/USDT:USDT")
    quote = "USDT"
    settle = "USDT"
    tick_size = Decimal("0.0001")
    qty_step = Decimal("0.1")
    min_qty = Decimal("0.1")
    min_notional = Decimal("5")
    funding_interval_minutes = 480


class CandleFactory(DjangoModelFactory):
    class Meta:
        model = Candle

    instrument = factory.SubFactory(InstrumentFactory)
    timeframe = "1h"
    open_time = factory.Sequence(lambda n: datetime(2021, 1, 1, tzinfo=UTC) + timedelta(hours=n))
    open = Decimal("100")
    high = Decimal("101")
    low = Decimal("99")
    close = Decimal("100.5")
    volume = Decimal("1234.5")


class LevelFactory(DjangoModelFactory):
    class Meta:
        model = Level
        django_get_or_create = ("number",)

    number = 1
    name = factory.LazyAttribute(lambda o: f"level {o.number}")
    # As the data migrations seed them (a transactional test's flush removes those rows): level 0 is watched only,
    # levels 2 and 3 trade real capital, at a quarter and the whole of the budget.
    traded = factory.LazyAttribute(lambda o: o.number != 0)
    trades_real_capital = factory.LazyAttribute(lambda o: o.number >= 2)
    capital_weight = factory.LazyAttribute(lambda o: {2: Decimal("0.25"), 3: Decimal("1")}.get(o.number, Decimal(0)))


class CointegrationRunFactory(DjangoModelFactory):
    class Meta:
        model = CointegrationRun

    exchange = "bybit"
    timeframe = "1h"
    lookback_bars = 2000


class PairFactory(DjangoModelFactory):
    class Meta:
        model = Pair

    y_instrument = factory.SubFactory(InstrumentFactory)
    x_instrument = factory.SubFactory(InstrumentFactory)
    status = Pair.Status.ACTIVE
    level = factory.SubFactory(LevelFactory, number=1)
    hedge_ratio = 0.85
    intercept = 0.1
    pvalue = 0.001
    qvalue = 0.02
    half_life_bars = 24.0


class ExchangeAccountFactory(DjangoModelFactory):
    class Meta:
        model = ExchangeAccount

    name = factory.Sequence(lambda n: f"account-{n}")
    exchange = "bybit"
    mode = ExchangeAccount.Mode.PAPER
    level = factory.SubFactory(LevelFactory, number=1)
    capital = Decimal("10000")
    per_trade_budget = Decimal("500")


class SignalFactory(DjangoModelFactory):
    class Meta:
        model = Signal

    pair = factory.SubFactory(PairFactory)
    bar_time = datetime(2021, 3, 1, 12, tzinfo=UTC)
    zscore = 2.3
    spread = 0.05
    action = Signal.Action.ENTER_SHORT


class PairTradeFactory(DjangoModelFactory):
    class Meta:
        model = PairTrade

    account = factory.SubFactory(ExchangeAccountFactory)
    pair = factory.SubFactory(PairFactory)
    side = PairTrade.Side.LONG_SPREAD
    state = PairTrade.State.OPEN
    hedge_ratio = 0.85
    entry_zscore = -2.1
    y_qty = Decimal("10")
    x_qty = Decimal("8.5")


class OrderFactory(DjangoModelFactory):
    class Meta:
        model = Order

    trade = factory.SubFactory(PairTradeFactory)
    instrument = factory.LazyAttribute(lambda o: o.trade.pair.y_instrument)
    leg = Order.Leg.Y
    action = Order.Action.OPEN
    side = Order.Side.BUY
    qty = Decimal("10")
    client_order_id = factory.Sequence(lambda n: f"sa-test-{n}")


class FillFactory(DjangoModelFactory):
    class Meta:
        model = Fill

    order = factory.SubFactory(OrderFactory)
    exchange_fill_id = factory.Sequence(lambda n: f"exec-{n}")
    qty = Decimal("10")
    price = Decimal("100")
    fee = Decimal("0.55")
    filled_at = datetime(2021, 3, 1, 12, 1, tzinfo=UTC)


class RiskLimitFactory(DjangoModelFactory):
    class Meta:
        model = RiskLimit

    account = factory.SubFactory(ExchangeAccountFactory)
    daily_loss_limit = Decimal("200")


class HaltFactory(DjangoModelFactory):
    class Meta:
        model = Halt

    source = Halt.Source.MANUAL
    reason = "test halt"


class GuardEventFactory(DjangoModelFactory):
    class Meta:
        model = GuardEvent

    kind = "daily_loss"
    message = "daily loss limit reached"


class DailyPnlSnapshotFactory(DjangoModelFactory):
    class Meta:
        model = DailyPnlSnapshot

    account = factory.SubFactory(ExchangeAccountFactory)
    date = datetime(2021, 3, 1, tzinfo=UTC).date()
    starting_equity = Decimal("10000")
    ending_equity = Decimal("10050")
    peak_equity = Decimal("10050")
    realised_pnl = Decimal("50")


class NotificationFactory(DjangoModelFactory):
    class Meta:
        model = Notification

    topic = "trade_opened"
    text = "opened a trade"
