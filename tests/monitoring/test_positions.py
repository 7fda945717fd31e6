"""Open trades marked at the newest close *on the market clock* (on the demo's stored-data clock the later stored
bars are the future and must not price anything), the same way for the dashboard, the API and Telegram, and as the
guard's book counts them: every fill at its own price, so a partly closed trade keeps the part it closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.market_clock import stored_clock_start
from execution.models import Order
from monitoring.positions import open_positions
from tests.factories import CandleFactory, OrderFactory, PairTradeFactory

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def long_spread_with_future_bars(**trade_fields):
    """Bought 10 y at 100 and sold 8.5 x at 50; bars 00:00 (y 90, x 49), 01:00 (y 105, x 48), 02:00 (y 200, x 10)."""
    trade = PairTradeFactory(state="open", opened_at=T0, **trade_fields)
    pair = trade.pair
    OrderFactory(trade=trade, leg=Order.Leg.Y, side="buy", qty=Decimal("10"), filled_qty=Decimal("10"),
                 avg_price=Decimal("100"), fee=Decimal("0"), status="filled")
    OrderFactory(trade=trade, instrument=pair.x_instrument, leg=Order.Leg.X, side="sell", qty=Decimal("8.5"),
                 filled_qty=Decimal("8.5"), avg_price=Decimal("50"), fee=Decimal("0"), status="filled")
    for k, (y, x) in enumerate((("90", "49"), ("105", "48"), ("200", "10"))):
        CandleFactory(instrument=pair.y_instrument, open_time=T0 + k * HOUR, close=Decimal(y))
        CandleFactory(instrument=pair.x_instrument, open_time=T0 + k * HOUR, close=Decimal(x))
    return trade


def test_the_marks_are_the_bar_closed_at_now_not_a_later_one():
    long_spread_with_future_bars()
    # at 02:00 the 01:00 bar has closed, the 02:00 bar has not: 10 x (105 - 100) - 8.5 x (48 - 50) = 67
    [position] = open_positions(now=T0 + 2 * HOUR)
    assert position.unrealised_pnl == Decimal("67")
    [position] = open_positions(now=T0 + HOUR)  # only the 00:00 bar: 10 x -10 - 8.5 x -1 = -91.5
    assert position.unrealised_pnl == Decimal("-91.5")
    [position] = open_positions(now=T0 + 10 * HOUR)  # every bar closed: 10 x 100 - 8.5 x -40 = 1340
    assert position.unrealised_pnl == Decimal("1340")


def test_on_the_stored_clock_the_default_time_is_the_clock(settings):
    long_spread_with_future_bars()
    settings.STATARB_MARKET_CLOCK = "stored"
    stored_clock_start(start=T0 + 2 * HOUR, end=T0 + 3 * HOUR, bar=HOUR, wall_seconds=1)
    [position] = open_positions()
    assert position.unrealised_pnl == Decimal("67")


def test_a_partly_closed_trade_keeps_what_its_closed_part_made():
    trade = long_spread_with_future_bars(funding=Decimal("-0.25"))
    trade.state = "closing"
    trade.save()
    OrderFactory(trade=trade, leg=Order.Leg.Y, side="sell", action=Order.Action.CLOSE, qty=Decimal("10"),
                 filled_qty=Decimal("4"), avg_price=Decimal("110"), fee=Decimal("0.3"), status="partially_filled")
    OrderFactory(trade=trade, instrument=trade.pair.x_instrument, leg=Order.Leg.X, side="buy",
                 action=Order.Action.CLOSE, qty=Decimal("8.5"), filled_qty=Decimal("8.5"), avg_price=Decimal("47"),
                 fee=Decimal("0.2"), status="filled")
    [position] = open_positions(now=T0 + 2 * HOUR)  # marks y 105, x 48
    y, x = position.legs
    assert (y.qty, y.entry_price, x.qty) == (Decimal("6"), Decimal("100"), Decimal("0"))
    # y: 4 sold at 110 (+40) and 6 held at 105 (+30); x: sold at 50, bought back at 47 (+25.5), whatever x is now.
    assert (y.unrealised_pnl, x.unrealised_pnl) == (Decimal("70"), Decimal("25.5"))
    assert position.unrealised_pnl == Decimal("95.5")
    assert position.net_pnl == Decimal("95.5") - Decimal("0.5") - Decimal("0.25")  # fees paid, funding


def test_a_trade_without_fills_or_a_price_has_no_pnl_yet():
    trade = PairTradeFactory(state="opening", opened_at=None)
    [position] = open_positions(now=T0 + 2 * HOUR)
    assert position.trade == trade and position.unrealised_pnl is None and position.net_pnl is None
