"""Building venue adapters: a keyless one for market data, a keyed one for trading."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError

from core.secrets import register_secret
from exchanges.bybit import BybitExchange
from exchanges.ccxt_client import CcxtExchange, build_ccxt_client
from exchanges.endpoints import check_base_url
from exchanges.errors import NotSupported

# Venues whose order side is implemented, and the adapter class of each.
TRADING_VENUES: dict[str, type[BybitExchange]] = {"bybit": BybitExchange}


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


def trading_exchange(
    exchange_id: str, *, api_key: str, api_secret: str, demo: bool, base_url: str | None = None,
    timeout_ms: int | None = None, enable_rate_limit: bool | None = None,
) -> BybitExchange:
    """The trading adapter of a venue with these credentials; demo trading or the live API. The key and the secret
    are registered as secrets first, so no log line can print them."""
    venue = TRADING_VENUES.get(exchange_id)
    if venue is None:
        raise NotSupported(f"trading is implemented for {', '.join(TRADING_VENUES)}, not {exchange_id!r}")
    if base_url:
        try:
            check_base_url(base_url)  # again here, where the key is about to be sent: a row edited by hand too
        except ValidationError as exc:
            raise NotSupported(" ".join(exc.messages)) from None
    register_secret(api_key)
    register_secret(api_secret)
    client = build_ccxt_client(
        exchange_id,
        api_key=api_key,
        secret=api_secret,
        demo=demo,
        base_url=base_url,
        enable_rate_limit=settings.STATARB_EXCHANGE_RATE_LIMIT if enable_rate_limit is None else enable_rate_limit,
        timeout_ms=settings.STATARB_EXCHANGE_TIMEOUT_MS if timeout_ms is None else timeout_ms,
    )
    return venue(client)
