"""Reads of open positions: each active trade's legs with entry and current prices, unrealised PnL, the pair's
current z against the rule's bands, and the time held. For the dashboard, ``/api/v1/positions/`` and Telegram's
/status: one marking of an open trade everywhere, the one the guard's book counts (``monitoring.guard.book``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import OuterRef, QuerySet, Subquery

from core.market_clock import market_clock
from execution.models import ExchangeAccount, Order, PairTrade, Signal
from pairs.marketdata.validation import timeframe_ms
from pairs.models import StrategyConfig
from pairs.selectors import newest_closes

PRICE_LOOKBACK = timedelta(days=3)  # a leg without a bar this recent has no current price (stale data)


@dataclass
class Leg:
    leg: str
    symbol: str
    qty: Decimal = Decimal(0)  # signed: + long, - short
    cost: Decimal = Decimal(0)  # signed: what every fill paid (+ bought, - sold)
    entry_price: Decimal | None = None
    current_price: Decimal | None = None
    filled: bool = False  # any fill at all

    @property
    def unrealised_pnl(self) -> Decimal | None:
        """What the leg's fills are worth at the current price, before costs: the part held at that price, the part
        already closed (a partly closed trade) at its own price. None before a fill, or held without a price."""
        if not self.filled or (self.qty and self.current_price is None):
            return None
        return (self.qty * self.current_price if self.qty else Decimal(0)) - self.cost


@dataclass
class Position:
    trade: PairTrade
    legs: list[Leg] = field(default_factory=list)
    zscore: float | None = None
    zscore_at: datetime | None = None
    entry_band: float | None = None
    exit_band: float | None = None
    stop_band: float | None = None
    held_hours: float | None = None
    fees_paid: Decimal = Decimal(0)  # the fills' fees so far (the trade's ``fees`` is written at its close)

    @property
    def unrealised_pnl(self) -> Decimal | None:
        """Both legs marked to the newest close, before costs."""
        values = [leg.unrealised_pnl for leg in self.legs]
        if not values or any(v is None for v in values):
            return None
        return sum(values, Decimal(0))

    @property
    def net_pnl(self) -> Decimal | None:
        """What closing now would add to equity before the closing fees: the legs' PnL, minus the fees paid, plus
        the funding received (what the guard's equity and the equity curve count for an open trade)."""
        gross = self.unrealised_pnl
        return None if gross is None else gross - self.fees_paid + self.trade.funding


def active_trades(*, account: ExchangeAccount | None = None, accounts=None) -> QuerySet[PairTrade]:
    trades = PairTrade.objects.filter(state__in=PairTrade.ACTIVE_STATES).select_related(
        "account", "pair__y_instrument", "pair__x_instrument").order_by("-id")
    if account is not None:
        trades = trades.filter(account=account)
    if accounts is not None:
        trades = trades.filter(account__in=accounts)
    latest = Signal.objects.filter(pair=OuterRef("pair")).order_by("-bar_time")
    return trades.annotate(zscore_now=Subquery(latest.values("zscore")[:1]),
                           zscore_at=Subquery(latest.values("bar_time")[:1]))


def _legs(trades: list[PairTrade], fees: dict[int, Decimal]) -> dict[int, dict[str, Leg]]:
    """Net signed quantity and volume-weighted entry price of each leg, from the orders' fills; ``fees`` gains each
    trade's fees paid so far."""
    legs: dict[int, dict[str, Leg]] = defaultdict(dict)
    cost: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    opened: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    orders = Order.objects.filter(trade__in=trades, filled_qty__gt=0).select_related("instrument").order_by("pk")
    for order in orders:
        leg = legs[order.trade_id].setdefault(order.leg, Leg(leg=order.leg, symbol=order.instrument.symbol))
        fees[order.trade_id] = fees.get(order.trade_id, Decimal(0)) + (order.fee or Decimal(0))
        sign = 1 if order.side == Order.Side.BUY else -1
        leg.qty += sign * order.filled_qty
        leg.filled = True
        if order.avg_price is not None:
            leg.cost += sign * order.filled_qty * order.avg_price
        if order.action in (Order.Action.OPEN, Order.Action.COMPLETE) and order.avg_price is not None:
            cost[order.trade_id, order.leg] += order.filled_qty * order.avg_price
            opened[order.trade_id, order.leg] += order.filled_qty
    for (trade_id, name), qty in opened.items():
        legs[trade_id][name].entry_price = cost[trade_id, name] / qty
    return legs


def open_positions(*, account: ExchangeAccount | None = None, accounts=None,
                   now: datetime | None = None) -> list[Position]:
    """Every active trade (of ``account``) with both legs priced at the newest stored bar."""
    now = now or market_clock().now()
    trades = list(active_trades(account=account, accounts=accounts))
    if not trades:
        return []
    config = StrategyConfig.current()
    fees: dict[int, Decimal] = {}
    legs = _legs(trades, fees)
    by_timeframe: dict[str, set[int]] = defaultdict(set)
    for trade in trades:
        by_timeframe[trade.pair.timeframe].update((trade.pair.y_instrument_id, trade.pair.x_instrument_id))
    prices: dict[tuple[str, int], Decimal] = {}
    for timeframe, ids in by_timeframe.items():
        # The newest bar closed at ``now`` (on the demo's stored-data clock later bars are stored: the future).
        newest_open = now - timedelta(milliseconds=timeframe_ms(timeframe))
        closes = newest_closes(sorted(ids), timeframe, newest_open=newest_open, oldest_open=now - PRICE_LOOKBACK)
        prices.update({(timeframe, i): close for i, close in closes.items()})
    positions = []
    for trade in trades:
        pair = trade.pair
        instrument_of = {"y": pair.y_instrument_id, "x": pair.x_instrument_id}
        symbol_of = {"y": pair.y_instrument.symbol, "x": pair.x_instrument.symbol}
        trade_legs = []
        for name in ("y", "x"):
            leg = legs.get(trade.pk, {}).get(name) or Leg(leg=name, symbol=symbol_of[name])
            leg.current_price = prices.get((pair.timeframe, instrument_of[name]))
            trade_legs.append(leg)
        sign = -1 if trade.side == PairTrade.Side.LONG_SPREAD else 1
        positions.append(Position(
            trade=trade, legs=trade_legs, zscore=trade.zscore_now, zscore_at=trade.zscore_at,
            entry_band=sign * config.entry_z, exit_band=config.exit_z, stop_band=sign * config.stop_z,
            held_hours=(now - trade.opened_at).total_seconds() / 3600 if trade.opened_at else None,
            fees_paid=fees.get(trade.pk, Decimal(0)),
        ))
    return positions
