"""What the bots need from an exchange: one interface, met by the Bybit adapter (demo, real) and the paper exchange.

Every quantity and price is a Decimal; ``symbol`` is whatever ``symbol_for(instrument)`` answers (the unified ccxt
symbol on a real exchange, the exchange's own id on paper). Errors are ``exchanges.errors``, never a library's.
The adapters are typed against ``InstrumentRef``, a small protocol, not against a Django model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from exchanges.types import (
    AccountSetup,
    BalanceState,
    FillState,
    FundingState,
    OrderAck,
    OrderState,
    PositionState,
)


class InstrumentRef(Protocol):
    """What an adapter needs to know of an instrument to name it: the exchange's own id and ccxt's unified symbol."""

    symbol: str
    ccxt_symbol: str


class TradingExchange(Protocol):
    def symbol_for(self, instrument: InstrumentRef) -> str: ...

    def prepare_account(self, symbols: list[str], *, leverage: Decimal | int) -> AccountSetup: ...

    def place_order(
        self, *, symbol: str, side: str, qty: Decimal, client_order_id: str, reduce_only: bool = False,
        order_type: str = "market", price: Decimal | None = None,
    ) -> OrderAck: ...

    def order_by_client_id(self, symbol: str, client_order_id: str, *, since_ms: int | None = None
                           ) -> OrderState | None: ...

    def fills_of(
        self, symbol: str, client_order_id: str | None = None, *, exchange_order_id: str | None = None,
        since_ms: int | None = None,
    ) -> list[FillState]: ...

    def executions(self, symbol: str, *, since_ms: int) -> list[FillState]: ...

    def cancel(self, symbol: str, client_order_id: str) -> OrderState: ...

    def open_orders(self, *, settle_coin: str = "USDT") -> list[OrderState]: ...

    def positions(self, symbols: list[str] | None = None, *, settle_coin: str = "USDT") -> list[PositionState]: ...

    def balance(self, coin: str = "USDT") -> BalanceState: ...

    def funding_payments(self, *, since_ms: int, until_ms: int, settle_coin: str = "USDT") -> list[FundingState]: ...
