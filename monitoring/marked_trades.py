"""Reads of the open trades marked to the market: each leg's fills valued at the instrument's newest close, the
close of the newest bar finished on the live processes' clock (``core.market_clock``: on the demo's stored-data clock
the later stored bars are the future)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from core.market_clock import market_clock
from execution.models import ExchangeAccount, Order, PairTrade
from execution.services.orders import signed
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle


@dataclass(frozen=True)
class MarkedTrade:
    trade: PairTrade
    y_qty: Decimal  # held now, signed
    x_qty: Decimal
    unrealised_pnl: Decimal | None  # net of the fees paid so far; None when a leg has no price yet


def _last_close(instrument_id: int, timeframe: str, *, now: datetime) -> Decimal | None:
    newest_open = now - timedelta(milliseconds=timeframe_ms(timeframe))  # the newest bar closed at ``now``
    return (Candle.objects.filter(instrument_id=instrument_id, timeframe=timeframe, open_time__lte=newest_open)
            .order_by("-open_time").values_list("close", flat=True).first())  # fmt: skip


def open_trades_marked(*, account: ExchangeAccount | None = None, now: datetime | None = None) -> list[MarkedTrade]:
    """Every active trade (of ``account``), with what it holds and its PnL if closed at the newest closes at ``now``
    (default: the market clock): the sum, over its fills, of signed quantity x (close - fill price), less fees."""
    now = now or market_clock().now()
    trades = (PairTrade.objects.filter(state__in=PairTrade.ACTIVE_STATES)
              .select_related("account", "pair__y_instrument", "pair__x_instrument").order_by("pk"))  # fmt: skip
    if account is not None:
        trades = trades.filter(account=account)
    out = []
    for trade in trades:
        orders = list(Order.objects.filter(trade=trade))
        marks = {Order.Leg.Y: _last_close(trade.pair.y_instrument_id, trade.pair.timeframe, now=now),
                 Order.Leg.X: _last_close(trade.pair.x_instrument_id, trade.pair.timeframe, now=now)}  # fmt: skip
        held = {leg: sum((signed(o.side, o.filled_qty) for o in orders if o.leg == leg), Decimal(0)) for leg in marks}
        pnl: Decimal | None = Decimal(0)
        for order in orders:
            if order.filled_qty and order.avg_price is not None:
                if marks[order.leg] is None:
                    pnl = None
                    break
                pnl += signed(order.side, order.filled_qty) * (marks[order.leg] - order.avg_price) - order.fee
        out.append(MarkedTrade(trade=trade, y_qty=held[Order.Leg.Y], x_qty=held[Order.Leg.X], unrealised_pnl=pnl))
    return out
