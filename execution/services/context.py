"""What a bot tick trades with: the account, its exchange, the tick's time, the market and a few knobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from exchanges.base import TradingExchange
from execution.models import ExchangeAccount
from pairs.market import MarketView
from pairs.models import Instrument, StrategyConfig

# Renew the bot's lease (2 minutes) when a tick has run this long.
LEASE_RENEW_AFTER_S = 30.0


class TickAborted(Exception):
    """The exchange could not be reached to resolve an order; nothing more is decided this tick."""


def _no_checkpoint(step: str) -> None:
    return None


@dataclass
class TradingContext:
    """What a tick trades with: the account, its exchange (wrapped once in ``RetryingExchange``), the tick's time
    (``now``, read once from the clock), the market view and a few knobs. Tests inject faults through
    ``checkpoint`` (called between every two steps of opening and closing) and the exchange."""

    account: ExchangeAccount
    exchange: TradingExchange
    now: datetime
    config: StrategyConfig
    market: MarketView | None = None
    checkpoint: Callable[[str], None] = _no_checkpoint
    sleep: Callable[[float], None] = time.sleep
    keep_lease: Callable[[], bool] | None = None  # renews the bot's lease; False when another bot took it
    halted: Callable[[], bool] | None = None  # is an active halt stopping new trades (asked before a first leg)
    planned_now: set[int] = field(default_factory=set)  # orders written this tick: known not to be sent yet
    _lease_renewed: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    _symbols: dict[int, str] = field(default_factory=dict)

    def renew_lease(self) -> None:
        """Renew the lease during a long tick (exchange retries can take a while); stop if it was lost."""
        if self.keep_lease is None or time.monotonic() - self._lease_renewed < LEASE_RENEW_AFTER_S:
            return
        if not self.keep_lease():
            raise TickAborted("the bot's lease was lost to another bot: stopping this tick")
        self._lease_renewed = time.monotonic()

    def closes(self, instrument_ids) -> dict[int, Decimal]:
        return self.market.closes(instrument_ids) if self.market is not None else {}

    def symbol(self, instrument: Instrument) -> str:
        if instrument.pk not in self._symbols:
            self._symbols[instrument.pk] = self.exchange.symbol_for(instrument)
        return self._symbols[instrument.pk]
