"""The generic ccxt adapter: building a client, mapping ccxt's errors onto ours, and public market data.

It turns ccxt's unified structures into ours (InstrumentSpec, candle rows) and ccxt's exceptions into
``exchanges.errors``, so the rest of the system never handles a ccxt type. A venue's order side, with its own
quirks, lives in a subclass (``exchanges.bybit.BybitExchange``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import ccxt

from core.logging import mask_secret_shapes
from core.secrets import redact
from exchanges.errors import (
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    OrderOutcomeUnknown,
    PermanentExchangeError,
    RateLimited,
    RefusedTemporarily,
    RequestTimedOut,
)
from exchanges.specs import InstrumentSpec

logger = logging.getLogger(__name__)

_MAX_CANDLES_PER_REQUEST = {"bybit": 1000}
DEFAULT_MAX_CANDLES_PER_REQUEST = 500
# Bybit serves at most 200 funding settlements a request.
FUNDING_RATES_PER_REQUEST = 200

_ERROR_MAP: tuple[tuple[type[Exception], type[ExchangeError]], ...] = (
    # Order matters: subclasses before their bases. A venue refines this by its own codes (exchanges.bybit).
    (ccxt.DuplicateOrderId, DuplicateClientOrderId),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.InsufficientFunds, InsufficientFunds),
    (ccxt.InvalidOrder, InvalidOrder),
    (ccxt.AuthenticationError, AuthenticationFailed),
    (ccxt.PermissionDenied, AuthenticationFailed),
    (ccxt.AccountSuspended, AuthenticationFailed),
    (ccxt.NotSupported, NotSupported),
    (ccxt.BadRequest, InvalidOrder),  # BadSymbol and parameter errors: refused by validation
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    (ccxt.InvalidNonce, RefusedTemporarily),  # a request timestamp outside the receive window: refused
    (ccxt.RequestTimeout, RequestTimedOut),
    # Everything else says nothing about what happened: a gateway page (ExchangeNotAvailable), a dropped
    # connection, an unreadable answer (BadResponse), an error answer of no known class (Bybit 10016).
    (ccxt.NetworkError, OrderOutcomeUnknown),
    (ccxt.OperationFailed, OrderOutcomeUnknown),
    (ccxt.ExchangeError, OrderOutcomeUnknown),
    (ccxt.BaseError, OrderOutcomeUnknown),
)


def error_text(exc: Exception) -> str:
    """An exception's class and text, for an error of ours: every known secret masked, and whatever has the shape of a
    key or a signature (a venue's answer may quote the refused request's own credentials)."""
    return mask_secret_shapes(redact(f"{type(exc).__name__}: {exc}"))


def map_ccxt_error(exc: Exception) -> ExchangeError:
    """Our error for a ccxt exception, by ccxt's class (``_ERROR_MAP``); a venue refines it by its own codes."""
    message = error_text(exc)
    for ccxt_type, our_type in _ERROR_MAP:
        if isinstance(exc, ccxt_type):
            return our_type(message)
    return PermanentExchangeError(message)


@contextlib.contextmanager
def ccxt_errors_mapped(mapper=map_ccxt_error) -> Iterator[None]:
    try:
        yield
    except ccxt.BaseError as exc:
        raise mapper(exc) from None


def build_ccxt_client(
    exchange_id: str,
    *,
    api_key: str | None = None,
    secret: str | None = None,
    demo: bool = False,
    base_url: str | None = None,
    enable_rate_limit: bool = True,
    timeout_ms: int = 10_000,
) -> ccxt.Exchange:
    """A ccxt client for linear perpetuals; demo trading and a REST base URL override applied in the order ccxt
    needs (demo first: it rewrites the URLs, which the override then replaces)."""
    try:
        exchange_class = getattr(ccxt, exchange_id)
    except AttributeError:
        raise NotSupported(f"ccxt has no exchange {exchange_id!r}") from None
    config: dict = {
        "enableRateLimit": enable_rate_limit,
        "timeout": timeout_ms,
        "options": {"defaultType": "swap"},
    }
    if exchange_id == "bybit":
        # Skip the account-type probes (/v5/user/query-api, /v5/account/info): unified trading account assumed.
        config["options"].update(
            {"fetchMarkets": {"types": ["linear"]}, "enableUnifiedAccount": True, "enableUnifiedMargin": False}
        )
    if api_key and secret:
        config.update({"apiKey": api_key, "secret": secret})
    client = _strict_class(exchange_class)(config)
    if exchange_id == "bybit":
        # With keys, ccxt's load_markets would also sign GET /v5/asset/coin/query-info (an asset endpoint whose
        # answers nothing here uses), and only on the live API: demo trading skips it. Off, a real account's every
        # call doesn't hang on an endpoint the demo never tried.
        client.has["fetchCurrencies"] = False
    if demo:
        with ccxt_errors_mapped():
            client.enable_demo_trading(True)
    if base_url:
        client.urls["api"] = {name: base_url.rstrip("/") for name in client.urls["api"]}
    return client


def _unreadable(exchange_id: str, status: int, response) -> bool:
    """Whether a 2xx answer can't be read as the venue's JSON: an HTML page, an empty or truncated body (ccxt hands
    these over as ``None``), or on Bybit a retCode 0 without its ``result`` object. ccxt would read such an answer
    as an empty list (no order, no position, no instrument), which proves nothing."""
    if not isinstance(status, int) or not 200 <= status < 300:
        return False  # ccxt's own status handling decides
    if response is None:
        return True
    if exchange_id == "bybit":
        return not isinstance(response, dict) or (
            str(response.get("retCode")) == "0" and not isinstance(response.get("result"), dict))
    return False


@functools.cache
def _strict_class(exchange_class: type[ccxt.Exchange]) -> type[ccxt.Exchange]:
    """``exchange_class`` raising ccxt's BadResponse (an unknown outcome) on an answer it can't read, instead of
    taking it for an empty one."""

    class Strict(exchange_class):
        def handle_errors(self, code, reason, url, method, headers, body, response, request_headers, request_body):
            if _unreadable(self.id, code, response):
                raise ccxt.BadResponse(f"{self.id} {method} {url} {code}: an answer that can't be read: "
                                       f"{str(body or '')[:200]!r}")
            return super().handle_errors(code, reason, url, method, headers, body, response, request_headers,
                                         request_body)

    Strict.__name__ = Strict.__qualname__ = exchange_class.__name__
    return Strict


def _decimal(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def first_decimal(*values) -> Decimal | None:
    """The first value that is a number: raw strings of the exchange first, ccxt's floats as a fallback."""
    for value in values:
        if value is None or isinstance(value, bool):
            continue
        text = str(value).strip()
        if not text:
            continue
        try:
            number = Decimal(text)
        except ArithmeticError:
            continue
        if number.is_finite():
            return number
    return None



class CcxtExchange:
    """Public market data of one exchange through ccxt: instruments and their filters, turnover, candles, funding
    rates. Venues that trade subclass it (``exchanges.bybit.BybitExchange``)."""

    def __init__(self, client: ccxt.Exchange):
        self._client = client

    @property
    def exchange_id(self) -> str:
        return self._client.id

    def linear_instruments(self, *, quote: str = "USDT") -> list[InstrumentSpec]:
        """Every linear perpetual settled in ``quote`` (active or not: inactive ones are marked delisted)."""
        with ccxt_errors_mapped():
            markets = self._client.load_markets(reload=True)
        specs = []
        for market in markets.values():
            if not (market.get("swap") and market.get("linear") and market.get("settle") == quote):
                continue
            info = market.get("info") or {}
            max_qty = _decimal(market["limits"]["amount"].get("max"))
            max_market_qty = first_decimal((info.get("lotSizeFilter") or {}).get("maxMktOrderQty"))
            if max_market_qty is not None and (max_qty is None or max_market_qty < max_qty):
                max_qty = max_market_qty  # the bots trade with market orders, which Bybit caps lower than limits
            launch_ms = info.get("launchTime")
            funding_minutes = info.get("fundingInterval")
            specs.append(
                InstrumentSpec(
                    symbol=market["id"],
                    base=market["base"],
                    quote=market["quote"],
                    settle=market.get("settle") or "",
                    ccxt_symbol=market["symbol"],
                    active=bool(market.get("active", True)),
                    tick_size=_decimal(market["precision"].get("price")),
                    qty_step=_decimal(market["precision"].get("amount")),
                    min_qty=_decimal(market["limits"]["amount"].get("min")),
                    max_qty=max_qty,
                    min_notional=_decimal(market["limits"].get("cost", {}).get("min")),
                    funding_interval_minutes=int(funding_minutes) if funding_minutes else None,
                    listed_at=datetime.fromtimestamp(int(launch_ms) / 1000, tz=UTC) if launch_ms else None,
                )
            )
        return specs

    def turnover_24h(self, ccxt_symbols: list[str] | None = None) -> dict[str, Decimal]:
        """Quote-currency turnover of the last 24 h per exchange symbol id."""
        with ccxt_errors_mapped():
            tickers = self._client.fetch_tickers(ccxt_symbols)
            markets = self._client.markets or {}
        turnover = {}
        for unified, ticker in tickers.items():
            market_id = markets.get(unified, {}).get("id") or ticker.get("info", {}).get("symbol")
            if market_id and ticker.get("quoteVolume") is not None:
                turnover[market_id] = Decimal(str(ticker["quoteVolume"]))
        return turnover

    def max_candles_per_request(self) -> int:
        return _MAX_CANDLES_PER_REQUEST.get(self.exchange_id, DEFAULT_MAX_CANDLES_PER_REQUEST)

    def fetch_funding_rates(self, ccxt_symbol: str, *, since_ms: int, until_ms: int) -> list[tuple[int, Decimal]]:
        """Funding settlements in [since_ms, until_ms], oldest first, as (time ms, rate).

        Bybit answers the newest 200 of a window: a full page is followed by the rest of the window before its oldest
        settlement (a contract whose interval was shorter than today's has more settlements than a caller counted).
        """
        rates: dict[int, Decimal] = {}
        until = until_ms
        with ccxt_errors_mapped():
            if not self._client.markets:
                self._client.load_markets()
            while until >= since_ms:
                rows = self._client.fetch_funding_rate_history(
                    ccxt_symbol, since=since_ms, limit=FUNDING_RATES_PER_REQUEST, params={"until": until}
                )
                page = {int(r["timestamp"]): Decimal(str(r["fundingRate"])) for r in rows
                        if r.get("timestamp") is not None and r.get("fundingRate") is not None
                        and since_ms <= int(r["timestamp"]) <= until}  # fmt: skip
                rates.update(page)
                if len(rows) < FUNDING_RATES_PER_REQUEST or not page:
                    break
                until = min(page) - 1
        return sorted(rates.items())

    def fetch_candles(self, ccxt_symbol: str, timeframe: str, *, since_ms: int, limit: int) -> list[list]:
        """Up to ``limit`` bars from ``since_ms`` on, oldest first: [open_time_ms, open, high, low, close, volume]."""
        with ccxt_errors_mapped():
            if not self._client.markets:
                self._client.load_markets()
            return self._client.fetch_ohlcv(ccxt_symbol, timeframe, since=since_ms, limit=limit)

    def _ensure_markets(self) -> None:
        if not self._client.markets:
            self._client.load_markets()
