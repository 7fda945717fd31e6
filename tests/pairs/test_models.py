"""The selection layer's tables: seeded levels, database constraints, the candle upsert and decimal precision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from execution.models import ExchangeAccount, Order
from pairs.models import Candle, Level, Pair
from tests.factories import (
    CandleFactory,
    ExchangeAccountFactory,
    InstrumentFactory,
    OrderFactory,
    PairFactory,
    PairTradeFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 1, 1, tzinfo=UTC)


# --- the data migration ---------------------------------------------------------------------------------------


def test_migration_seeds_the_four_levels_in_order():
    assert list(Level.objects.order_by("number").values_list("number", "name")) == [
        (0, "watch"),
        (1, "paper"),
        (2, "small live"),
        (3, "full live"),
    ]


def test_only_levels_two_and_three_trade_real_capital():
    real = dict(Level.objects.values_list("number", "trades_real_capital"))
    assert real == {0: False, 1: False, 2: True, 3: True}
    live_evidence = dict(Level.objects.values_list("number", "requires_live_evidence"))
    assert live_evidence == {0: False, 1: False, 2: True, 3: True}


def test_seeded_capital_weights():
    weights = dict(Level.objects.values_list("number", "capital_weight"))
    assert weights == {0: Decimal("0"), 1: Decimal("0"), 2: Decimal("0.25"), 3: Decimal("1")}


# --- constraints ----------------------------------------------------------------------------------------------


def test_candle_high_below_low_is_rejected():
    instrument = InstrumentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        CandleFactory(instrument=instrument, high=Decimal("98"), low=Decimal("99"))
    assert Candle.objects.count() == 0


def test_candle_high_equal_to_low_is_accepted():
    candle = CandleFactory(open=Decimal("5"), high=Decimal("5"), low=Decimal("5"), close=Decimal("5"))
    assert Candle.objects.get(pk=candle.pk).high == Decimal("5")


@pytest.mark.parametrize(
    "prices",
    [
        {"low": Decimal("0"), "open": Decimal("1"), "high": Decimal("2"), "close": Decimal("1")},
        {"low": Decimal("-1"), "open": Decimal("1"), "high": Decimal("2"), "close": Decimal("1")},
        {"low": Decimal("1"), "open": Decimal("0"), "high": Decimal("2"), "close": Decimal("1")},
        {"low": Decimal("1"), "open": Decimal("1"), "high": Decimal("2"), "close": Decimal("-0.5")},
    ],
    ids=["low-zero", "low-negative", "open-zero", "close-negative"],
)
def test_candle_non_positive_price_is_rejected(prices):
    instrument = InstrumentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        CandleFactory(instrument=instrument, **prices)
    assert Candle.objects.count() == 0


def test_duplicate_candle_per_instrument_timeframe_open_time_is_rejected():
    candle = CandleFactory(open_time=T0)
    with pytest.raises(IntegrityError), transaction.atomic():
        CandleFactory(instrument=candle.instrument, timeframe=candle.timeframe, open_time=T0)
    # Another timeframe or another instrument at the same time is a different bar.
    CandleFactory(instrument=candle.instrument, timeframe="4h", open_time=T0)
    CandleFactory(instrument=InstrumentFactory(), timeframe=candle.timeframe, open_time=T0)
    assert Candle.objects.filter(open_time=T0).count() == 3


def test_pair_with_identical_legs_is_rejected():
    instrument = InstrumentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        PairFactory(y_instrument=instrument, x_instrument=instrument)
    assert Pair.objects.count() == 0


def test_duplicate_pair_is_rejected_but_reversed_legs_are_another_pair():
    pair = PairFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        PairFactory(y_instrument=pair.y_instrument, x_instrument=pair.x_instrument, timeframe=pair.timeframe)
    PairFactory(y_instrument=pair.x_instrument, x_instrument=pair.y_instrument, timeframe=pair.timeframe)
    PairFactory(y_instrument=pair.y_instrument, x_instrument=pair.x_instrument, timeframe="4h")
    assert Pair.objects.count() == 3


def test_order_filled_qty_above_qty_is_rejected():
    trade = PairTradeFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(trade=trade, qty=Decimal("10"), filled_qty=Decimal("10.000000000001"))
    assert Order.objects.count() == 0
    order = OrderFactory(trade=trade, qty=Decimal("10"), filled_qty=Decimal("10"))
    assert Order.objects.get(pk=order.pk).filled_qty == Decimal("10")


def test_order_update_raising_filled_qty_above_qty_is_rejected():
    order = OrderFactory(qty=Decimal("3"), filled_qty=Decimal("1"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=order.pk).update(filled_qty=Decimal("3.5"))
    assert Order.objects.get(pk=order.pk).filled_qty == Decimal("1")


# --- candle bulk upsert ---------------------------------------------------------------------------------------


def _upsert(rows: list[Candle]) -> None:
    options = {"update_conflicts": True, "update_fields": ["open", "high", "low", "close", "volume", "turnover"]}
    # MySQL/MariaDB's ON DUPLICATE KEY UPDATE takes no conflict target: Django refuses unique_fields there.
    if connection.features.supports_update_conflicts_with_target:
        options["unique_fields"] = ["instrument", "timeframe", "open_time"]
    Candle.objects.bulk_create(rows, **options)


def _bars(instrument, close_offset: Decimal) -> list[Candle]:
    return [
        Candle(
            instrument=instrument,
            timeframe="1h",
            open_time=T0 + timedelta(hours=h),
            open=Decimal("100") + h,
            high=Decimal("110") + h,
            low=Decimal("90") + h,
            close=Decimal("105") + h + close_offset,
            volume=Decimal("1000") + h,
        )
        for h in range(3)
    ]


def test_candle_upsert_twice_stores_each_bar_once_and_updates_values():
    instrument = InstrumentFactory()
    other = InstrumentFactory()
    CandleFactory(instrument=other, open_time=T0, close=Decimal("42"))

    _upsert(_bars(instrument, Decimal("0")))
    assert list(Candle.objects.filter(instrument=instrument).values_list("close", flat=True)) == [
        Decimal("105"),
        Decimal("106"),
        Decimal("107"),
    ]

    revised = _bars(instrument, Decimal("0.5"))
    revised[2].volume = Decimal("9999.25")
    _upsert(revised)

    rows = list(Candle.objects.filter(instrument=instrument).order_by("open_time").values_list("open_time", "close"))
    assert rows == [
        (T0, Decimal("105.5")),
        (T0 + timedelta(hours=1), Decimal("106.5")),
        (T0 + timedelta(hours=2), Decimal("107.5")),
    ]
    assert Candle.objects.get(instrument=instrument, open_time=T0 + timedelta(hours=2)).volume == Decimal("9999.25")
    # The other instrument's bar at the same time is untouched.
    assert Candle.objects.get(instrument=other).close == Decimal("42")
    assert Candle.objects.count() == 4


# --- decimal precision ----------------------------------------------------------------------------------------


def test_smallest_quantity_round_trips_exactly():
    tiny = Decimal("0.000000000001")
    order = OrderFactory(qty=tiny, filled_qty=tiny)
    instrument = InstrumentFactory(qty_step=tiny, tick_size=tiny)
    assert Order.objects.get(pk=order.pk).qty == tiny
    assert Order.objects.get(pk=order.pk).filled_qty == tiny
    stored = type(instrument).objects.get(pk=instrument.pk)
    assert (stored.qty_step, stored.tick_size) == (tiny, tiny)


def test_large_notional_with_twelve_decimals_round_trips_exactly(request):
    if connection.vendor == "sqlite":
        # Django stores SQLite decimals as REAL and reads back 15 significant digits; this value has 25.
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="SQLite keeps only 15 significant digits of a DecimalField")
        )
    notional = Decimal("1000000000000.000000000001")
    account = ExchangeAccountFactory(capital=notional, per_trade_budget=notional)
    stored = ExchangeAccount.objects.get(pk=account.pk)
    assert stored.capital == notional
    assert stored.per_trade_budget == notional
    assert ExchangeAccount.objects.filter(capital=notional).count() == 1


@pytest.mark.parametrize(("field", "value"), [
    ("capital_weight", Decimal("-3")), ("capital_weight", Decimal("1.5")), ("min_win_rate", 7.0),
    ("max_drawdown", -1.0), ("max_qvalue", 2.0), ("min_profit_factor", -0.1), ("max_half_life_bars", 4.0),
])
def test_a_level_with_an_impossible_threshold_is_refused_by_field(field, value):
    from django.core.exceptions import ValidationError

    level = Level(number=7, name="x", min_half_life_bars=5.0, max_half_life_bars=50.0)
    setattr(level, field, value)
    with pytest.raises(ValidationError) as refused:
        level.full_clean()
    assert field in refused.value.message_dict


@pytest.mark.parametrize(("field", "value"), [
    ("grading_hysteresis", -0.9), ("grading_hysteresis", 1.0), ("live_shortfall_margin", 5.0),
    ("entry_z", -2.0), ("exit_z", 3.0), ("stop_z", 0.5), ("max_pvalue", 1.5), ("taker_fee", -0.001),
    ("max_half_life_bars", 1.0), ("zscore_window_bars", 0), ("zscore_window_bars", 1), ("timeframe", "7h"),
])
def test_a_strategy_configuration_the_rule_would_refuse_is_refused_by_field(field, value):
    from django.core.exceptions import ValidationError

    from pairs.models import StrategyConfig

    config = StrategyConfig.current()
    config.full_clean()  # the defaults pass
    setattr(config, field, value)
    with pytest.raises(ValidationError) as refused:
        config.full_clean()
    assert field in refused.value.message_dict, refused.value.message_dict


@pytest.mark.parametrize(("timeframe", "retention_days", "refused"), [
    ("1h", 0, True), ("1h", 104, True), ("1h", 105, False), ("4h", 400, True), ("4h", 417, False),
])
def test_a_candle_retention_shorter_than_a_screening_reads_is_refused(timeframe, retention_days, refused):
    # The maintenance deletes candles older than the retention before the newest bar at every grading: 0 days (or
    # the default 400 days of 4h bars, 2,400 bars) deleted the 2,000 + 500 bars a screening reads.
    from django.core.exceptions import ValidationError

    from pairs.models import StrategyConfig

    config = StrategyConfig.current()
    config.timeframe, config.candle_retention_days = timeframe, retention_days
    if not refused:
        config.full_clean()
        return
    with pytest.raises(ValidationError) as error:
        config.full_clean()
    message = error.value.message_dict["candle_retention_days"][0]
    assert "2500 bars" in message and "lookback_bars" in message, message
