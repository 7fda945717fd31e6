"""What an exchange says about an instrument, in our terms (returned by the venue adapters, stored by pairs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class InstrumentSpec:
    symbol: str
    base: str
    quote: str
    settle: str = ""
    ccxt_symbol: str = ""
    kind: str = "linear_perpetual"
    active: bool = True
    tick_size: Decimal | None = None
    qty_step: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    min_notional: Decimal | None = None
    funding_interval_minutes: int | None = None
    listed_at: datetime | None = None
    turnover_24h: Decimal | None = None
