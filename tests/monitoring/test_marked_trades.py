"""Open trades marked at the newest close *on the market clock*: on the demo's stored-data clock the later stored
bars are the future and must not price anything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.market_clock import stored_clock_start
from execution.models import Order
from monitoring.marked_trades import open_trades_marked
from tests.factories import CandleFactory, OrderFactory, PairTradeFactory

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def long_spread_with_future_bars():
    """Bought 10 y at 100 and sold 8.5 x at 50; bars 00:00 (y 90, x 49), 01:00 (y 105, x 48), 02:00 (y 200, x 10)."""
    trade = PairTradeFactory(state="open")
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
    [marked] = open_trades_marked(now=T0 + 2 * HOUR)
    assert marked.unrealised_pnl == Decimal("67")
    [marked] = open_trades_marked(now=T0 + HOUR)  # only the 00:00 bar: 10 x -10 - 8.5 x -1 = -91.5
    assert marked.unrealised_pnl == Decimal("-91.5")
    [marked] = open_trades_marked(now=T0 + 10 * HOUR)  # every bar closed: 10 x 100 - 8.5 x -40 = 1340
    assert marked.unrealised_pnl == Decimal("1340")


def test_on_the_stored_clock_the_default_time_is_the_clock(settings):
    long_spread_with_future_bars()
    settings.STATARB_MARKET_CLOCK = "stored"
    stored_clock_start(start=T0 + 2 * HOUR, end=T0 + 3 * HOUR, bar=HOUR, wall_seconds=1)
    [marked] = open_trades_marked()
    assert marked.unrealised_pnl == Decimal("67")
