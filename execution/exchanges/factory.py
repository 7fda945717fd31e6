"""Building exchange adapters for accounts and for market data."""

from __future__ import annotations

from django.conf import settings

from execution.exchanges.ccxt_exchange import CcxtExchange, build_ccxt_client


def market_data_exchange(exchange_id: str | None = None) -> CcxtExchange:
    """A keyless client for public market data (instruments, tickers, candles)."""
    return CcxtExchange(
        build_ccxt_client(
            exchange_id or settings.STATARB_EXCHANGE,
            base_url=settings.STATARB_MARKET_DATA_URL or None,
            enable_rate_limit=settings.STATARB_EXCHANGE_RATE_LIMIT,
            timeout_ms=settings.STATARB_EXCHANGE_TIMEOUT_MS,
        )
    )
