"""What the exchange adapter answers about orders, fills, positions and balances: our types, never ccxt dicts.

Every price, quantity and amount is a Decimal; symbols are ccxt unified ("BTC/USDT:USDT"); times are epoch ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

# The order status vocabulary of execution.models.Order (without "planned" and "unknown", which only we know).
SUBMITTED = "submitted"
PARTIALLY_FILLED = "partially_filled"
FILLED = "filled"
CANCELLED = "cancelled"
REJECTED = "rejected"
ORDER_STATUSES = (SUBMITTED, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED)
# The raw status of an order known only from its executions (its order lists don't show it yet; its reduce-only
# flag and its full quantity are not known then).
FROM_EXECUTIONS = "(from executions)"


@dataclass(frozen=True)
class OrderState:
    """An order as the exchange reports it.

    ``status`` says how much is filled; ``is_open`` whether more can still fill. An order that filled in part and
    then ended (cancelled, or the rest of an IOC market order dropped) is ``partially_filled`` with
    ``is_open=False``; ``cancelled`` always means nothing was filled.
    """

    exchange_order_id: str
    client_order_id: str
    symbol: str
    side: str  # "buy" / "sell"
    order_type: str  # "market" / "limit"
    status: str  # one of ORDER_STATUSES
    is_open: bool
    qty: Decimal
    filled_qty: Decimal
    avg_price: Decimal | None  # None until something filled
    fee: Decimal  # cumulative, in fee_currency (the settle coin, i.e. the quote currency of a linear perpetual)
    fee_currency: str
    reduce_only: bool
    limit_price: Decimal | None = None  # for a market order: None (Bybit reports a protection price there)
    raw_status: str = ""  # the exchange's own word, for logs
    created_ms: int | None = None
    updated_ms: int | None = None

    @property
    def remaining_qty(self) -> Decimal:
        return self.qty - self.filled_qty


@dataclass(frozen=True)
class OrderAck:
    """The answer to place_order.

    ``existing=False``: the create call was answered; the order exists. Its ``state`` and ``fills`` come along when
    the exchange gave them with the answer (the paper exchange, whose market orders fill when placed: a final state
    and every fill); None means they must be read afterwards (Bybit answers a create with the ids only).
    ``existing=True``: the order was found by its client order id instead, because the exchange said the id was taken
    (a retried create had reached it before) or the create call timed out after the exchange had accepted it;
    ``state`` is what the lookup found, and its fills are read afterwards.
    """

    exchange_order_id: str
    client_order_id: str
    symbol: str
    existing: bool = False
    state: OrderState | None = None
    fills: tuple[FillState, ...] | None = None


EXCHANGE_EXEC_TYPES = frozenset({"BustTrade", "AdlTrade", "Delivery"})


@dataclass(frozen=True)
class FillState:
    """One execution (trade) of an order."""

    exec_id: str
    exchange_order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    is_maker: bool
    time_ms: int
    # What made it (Bybit's execType): "Trade" for an order's fill; "BustTrade" (liquidation), "AdlTrade"
    # (auto-deleveraging), "Delivery" (a delisted or delivered contract settled) are the exchange's own.
    exec_type: str = "Trade"

    @property
    def by_exchange(self) -> bool:
        """Made by the exchange itself (liquidation, auto-deleveraging, delivery), not by an order of anyone's."""
        return self.exec_type in EXCHANGE_EXEC_TYPES

    @property
    def filled_at(self) -> datetime:
        return datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)


@dataclass(frozen=True)
class PositionState:
    """A net (one-way mode) position; ``qty`` is signed: positive long, negative short."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    mark_price: Decimal | None
    unrealised_pnl: Decimal
    leverage: Decimal | None = None

    @property
    def side(self) -> str:
        return "long" if self.qty > 0 else "short" if self.qty < 0 else "flat"


@dataclass(frozen=True)
class BalanceState:
    """One coin of the (unified) account. ``available`` = equity minus the initial margin of positions and orders."""

    coin: str
    equity: Decimal
    wallet_balance: Decimal
    available: Decimal
    unrealised_pnl: Decimal


@dataclass(frozen=True)
class AccountSetup:
    """What prepare_account did; ``*_changed`` False / empty when everything was already as asked."""

    position_mode: str  # "one_way"
    position_mode_changed: bool
    leverage: Decimal
    leverage_changed: tuple[str, ...]  # symbols whose leverage was changed


@dataclass(frozen=True)
class FundingState:
    """One funding settlement on one position: ``amount`` received (+) or paid (-), in the settle coin."""

    symbol: str
    time_ms: int
    rate: Decimal
    position_qty: Decimal  # signed, at settlement
    mark_price: Decimal | None
    amount: Decimal

    @property
    def settled_at(self) -> datetime:
        return datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)


def order_state_from_fills(fills: list[FillState], settle: str = "") -> OrderState:
    """An order known only from its executions (oldest first): ended, with what they filled (a market order that the
    order lists don't show yet). ``settle``: the fee currency when the executions don't say."""
    filled = sum((f.qty for f in fills), Decimal(0))
    notional = sum((f.qty * f.price for f in fills), Decimal(0))
    first = fills[0]
    return OrderState(
        exchange_order_id=first.exchange_order_id, client_order_id=first.client_order_id, symbol=first.symbol,
        side=first.side, order_type="market", status=FILLED, is_open=False, qty=filled, filled_qty=filled,
        avg_price=notional / filled if filled else None, fee=sum((f.fee for f in fills), Decimal(0)),
        fee_currency=first.fee_currency or settle, reduce_only=False, raw_status=FROM_EXECUTIONS,
        created_ms=first.time_ms, updated_ms=fills[-1].time_ms,
    )

