"""The ccxt adapter: the one module that talks to exchanges, and the only one that imports ccxt.

It turns ccxt's unified structures into ours (InstrumentSpec, candle rows, execution.exchanges.types) and ccxt's
exceptions into execution.exchanges.errors, so the rest of the system never handles a ccxt type.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import ccxt

from execution.exchanges.errors import (
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    PermanentExchangeError,
    RateLimited,
    RequestTimedOut,
    TemporaryExchangeError,
)
from execution.exchanges.types import (
    CANCELLED,
    FILLED,
    PARTIALLY_FILLED,
    REJECTED,
    SUBMITTED,
    AccountSetup,
    BalanceState,
    FillState,
    FundingState,
    OrderAck,
    OrderState,
    PositionState,
)
from pairs.marketdata.specs import InstrumentSpec
from statarb_site.secrets import redact

logger = logging.getLogger(__name__)

# Bybit answers a re-used orderLinkId with one of these retCodes; ccxt maps them to generic errors. Only the
# retCode field counts: the same digits elsewhere in the body (a millisecond timestamp, a price) mean nothing.
# 110072 "OrderLinkedID is duplicate" is the derivatives (linear) answer; the others come from spot and older APIs.
_BYBIT_DUPLICATE_ORDER_CODE = re.compile(r'"retCode"\s*:\s*"?(170141|12141|30001|110072)\b')
_MAX_CANDLES_PER_REQUEST = {"bybit": 1000}
DEFAULT_MAX_CANDLES_PER_REQUEST = 500
# Bybit serves at most 200 funding settlements a request.
FUNDING_RATES_PER_REQUEST = 200

_ERROR_MAP: tuple[tuple[type[Exception], type[ExchangeError]], ...] = (
    # Order matters: subclasses before their bases.
    (ccxt.DuplicateOrderId, DuplicateClientOrderId),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.InsufficientFunds, InsufficientFunds),
    (ccxt.InvalidOrder, InvalidOrder),
    (ccxt.AuthenticationError, AuthenticationFailed),
    (ccxt.PermissionDenied, AuthenticationFailed),
    (ccxt.AccountSuspended, AuthenticationFailed),
    (ccxt.NotSupported, NotSupported),
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    (ccxt.RequestTimeout, RequestTimedOut),
    (ccxt.NetworkError, TemporaryExchangeError),  # ExchangeNotAvailable, OnMaintenance, ...
    # ccxt's "operation failed, may succeed later" family: bad or empty responses, a cancel still pending.
    (ccxt.OperationFailed, TemporaryExchangeError),
    (ccxt.ExchangeError, PermanentExchangeError),
    (ccxt.BaseError, PermanentExchangeError),
)


def map_ccxt_error(exc: Exception) -> ExchangeError:
    message = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ccxt.ExchangeError) and _BYBIT_DUPLICATE_ORDER_CODE.search(message):
        return DuplicateClientOrderId(message)
    for ccxt_type, our_type in _ERROR_MAP:
        if isinstance(exc, ccxt_type):
            return our_type(message)
    return PermanentExchangeError(message)


@contextlib.contextmanager
def ccxt_errors_mapped() -> Iterator[None]:
    try:
        yield
    except ccxt.BaseError as exc:
        raise map_ccxt_error(exc) from None


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
    client = exchange_class(config)
    if demo:
        with ccxt_errors_mapped():
            client.enable_demo_trading(True)
    if base_url:
        client.urls["api"] = {name: base_url.rstrip("/") for name in client.urls["api"]}
    return client


def _decimal(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


# ------------------------------------------------------------------------------------------------ order side helpers

# Bybit's own order statuses (v5). Open ones can still fill; the rest are final.
_BYBIT_OPEN_STATUSES = frozenset({"Created", "New", "PartiallyFilled", "PendingCancel", "Untriggered", "Triggered",
                                  "Active"})  # fmt: skip
# "not modified" answers that mean the account is already as asked
_POSITION_MODE_NOT_MODIFIED = frozenset({"110025"})
_LEVERAGE_NOT_MODIFIED = frozenset({"110043"})
_RET_CODE = re.compile(r'"retCode"\s*:\s*"?(\d+)')
# Bybit orderLinkId: at most 36 characters of letters, digits, dashes and underscores.
_CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_ORDER_SIDES = ("buy", "sell")
_ORDER_TYPES = ("market", "limit")
_FILLS_PER_REQUEST = 100  # Bybit's maximum for /v5/execution/list
_POSITIONS_PER_REQUEST = 200  # and for /v5/position/list
_MAX_PAGES = 50
# Bybit's execution list spans at most 7 days a request (endTime - startTime <= 7 days).
_EXECUTION_WINDOW_MS = 7 * 24 * 60 * 60 * 1000
_MAX_FUNDING_PAGES_PER_WINDOW = 200  # 20,000 settlements a week: far more than an account of a few pairs has


def _ret_code(exc: Exception) -> str | None:
    """The retCode of a Bybit answer quoted in a ccxt exception's message, if any."""
    match = _RET_CODE.search(str(exc))
    return match.group(1) if match else None


def _first_decimal(*values) -> Decimal | None:
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


def _plain(number: Decimal) -> str:
    """A Decimal as plain text without exponent or trailing zeros ("0.01", "10"), the way the exchange writes it."""
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _as_bool(value) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


def _order_status(raw: str, unified: str | None, filled: Decimal, qty: Decimal) -> tuple[str, bool]:
    """(our status, still open) from the exchange's raw status, ccxt's unified one and the filled quantity."""
    if raw == "Rejected" or (not raw and unified == "rejected"):
        return REJECTED, False
    if raw == "Filled" or (not raw and unified == "closed" and qty and filled >= qty):
        return FILLED, False
    is_open = raw in _BYBIT_OPEN_STATUSES if raw else unified == "open"
    if is_open:
        return (PARTIALLY_FILLED if filled > 0 else SUBMITTED), True
    # ended without filling completely: Cancelled (Bybit derivatives keep that word after a partial fill too),
    # PartiallyFilledCanceled, Deactivated, expired
    return (PARTIALLY_FILLED if filled > 0 else CANCELLED), False


def _order_state(order: dict, *, settle: str = "") -> OrderState:
    info = order.get("info") or {}
    qty = _first_decimal(info.get("qty"), order.get("amount")) or Decimal(0)
    filled = _first_decimal(info.get("cumExecQty"), order.get("filled")) or Decimal(0)
    avg_price = _first_decimal(info.get("avgPrice"), order.get("average"))
    if avg_price is not None and (avg_price <= 0 or not filled):
        avg_price = None  # Bybit writes "" or "0" before the first fill
    fee_info = order.get("fee") or {}
    fee = _first_decimal(info.get("cumExecFee"), fee_info.get("cost")) or Decimal(0)
    fee_detail = info.get("cumFeeDetail") or {}
    fee_currency = next(iter(fee_detail), None) or fee_info.get("currency") or settle
    order_type = (order.get("type") or str(info.get("orderType") or "")).lower()
    raw_status = str(info.get("orderStatus") or "")
    status, is_open = _order_status(raw_status, order.get("status"), filled, qty)
    reduce_only = _as_bool(info.get("reduceOnly"))
    if reduce_only is None:
        reduce_only = bool(order.get("reduceOnly"))
    return OrderState(
        exchange_order_id=str(order.get("id") or info.get("orderId") or ""),
        client_order_id=str(order.get("clientOrderId") or info.get("orderLinkId") or ""),
        symbol=order.get("symbol") or "",
        side=(order.get("side") or str(info.get("side") or "")).lower(),
        order_type=order_type,
        status=status,
        is_open=is_open,
        qty=qty,
        filled_qty=filled,
        avg_price=avg_price,
        fee=fee,
        fee_currency=fee_currency,
        reduce_only=reduce_only,
        limit_price=_first_decimal(info.get("price"), order.get("price")) if order_type == "limit" else None,
        raw_status=raw_status or str(order.get("status") or ""),
        created_ms=order.get("timestamp"),
        updated_ms=order.get("lastUpdateTimestamp") or order.get("lastTradeTimestamp"),
    )


def _fill_state(trade: dict) -> FillState:
    info = trade.get("info") or {}
    fee_info = trade.get("fee") or {}
    return FillState(
        exec_id=str(trade.get("id") or info.get("execId") or ""),
        exchange_order_id=str(trade.get("order") or info.get("orderId") or ""),
        client_order_id=str(info.get("orderLinkId") or trade.get("clientOrderId") or ""),
        symbol=trade.get("symbol") or "",
        side=(trade.get("side") or "").lower(),
        qty=_first_decimal(info.get("execQty"), trade.get("amount")) or Decimal(0),
        price=_first_decimal(info.get("execPrice"), trade.get("price")) or Decimal(0),
        fee=_first_decimal(info.get("execFee"), fee_info.get("cost")) or Decimal(0),
        fee_currency=fee_info.get("currency") or str(info.get("feeCoin") or info.get("feeCurrency") or ""),
        is_maker=trade.get("takerOrMaker") == "maker",
        time_ms=int(trade.get("timestamp") or info.get("execTime") or 0),
    )


def _position_state(position: dict) -> PositionState:
    info = position.get("info") or {}
    size = _first_decimal(info.get("size"), position.get("contracts")) or Decimal(0)
    raw_side = str(info.get("side") or "")
    if raw_side:
        short = raw_side == "Sell"
    else:
        short = position.get("side") == "short"
    qty = -abs(size) if short else abs(size)
    return PositionState(
        symbol=position.get("symbol") or "",
        qty=qty,
        avg_price=_first_decimal(info.get("avgPrice"), info.get("entryPrice"), position.get("entryPrice"))
        or Decimal(0),
        mark_price=_first_decimal(info.get("markPrice"), position.get("markPrice")),
        unrealised_pnl=_first_decimal(info.get("unrealisedPnl"), position.get("unrealizedPnl")) or Decimal(0),
        leverage=_first_decimal(info.get("leverage"), position.get("leverage")),
    )


def _funding_state(row: dict, symbol: str) -> FundingState | None:
    """One Bybit funding execution (execType "Funding") as a FundingState, from the raw strings in ``info``.

    Bybit's execFee is what the account paid: positive paid, negative received; ``amount`` is the opposite.
    The position's sign: paid = qty * price * rate, so it follows from the signs of execFee and feeRate; when either
    is zero, from the side of the funding execution ("Sell" closes the funding "trade" of a long, as in Bybit's
    sample answers: a negative rate received by a long shows side "Sell").
    """
    info = row.get("info") or {}
    fee = _first_decimal(info.get("execFee"), row.get("amount"))
    rate = _first_decimal(info.get("feeRate"), row.get("rate"))
    qty = _first_decimal(info.get("execQty"))
    time_ms = _first_decimal(info.get("execTime"), row.get("timestamp"))
    if fee is None or rate is None or time_ms is None:
        logger.warning("funding execution without fee, rate or time ignored: %s", redact(str(info)))
        return None
    size = abs(qty) if qty is not None else Decimal(0)
    if fee and rate:
        long = (fee > 0) == (rate > 0)
    else:
        long = str(info.get("side") or "") == "Sell"
    return FundingState(
        symbol=symbol,
        time_ms=int(time_ms),
        rate=rate,
        position_qty=size if long else -size,
        mark_price=_first_decimal(info.get("execPrice"), info.get("markPrice")),
        amount=Decimal(0) - fee,
    )


def _next_cursor(rows: list[dict]) -> str | None:
    """ccxt's Bybit parsers put the answer's nextPageCursor into one row's info (the first of the raw list, which
    need not be the first after ccxt sorted the rows)."""
    for row in rows:
        cursor = (row.get("info") or {}).get("nextPageCursor")
        if cursor:
            return str(cursor)
    return None


class CcxtExchange:
    """Market data and trading on one exchange through ccxt.

    The order side (prepare_account, place_order, order_by_client_id, fills_of, cancel, positions, balance) is
    written for Bybit v5 linear perpetuals on a unified account in one-way mode: orders carry positionIdx 0 and the
    client order id as orderLinkId, and are looked up by orderLinkId (fetch_order only reaches the last 500 orders).
    """

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
                    max_qty=_decimal(market["limits"]["amount"].get("max")),
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
        """Funding settlements in [since_ms, until_ms], oldest first, as (time ms, rate)."""
        with ccxt_errors_mapped():
            if not self._client.markets:
                self._client.load_markets()
            rows = self._client.fetch_funding_rate_history(
                ccxt_symbol, since=since_ms, limit=FUNDING_RATES_PER_REQUEST, params={"until": until_ms}
            )
        return sorted(
            (int(r["timestamp"]), Decimal(str(r["fundingRate"])))
            for r in rows
            if r.get("timestamp") is not None and r.get("fundingRate") is not None
        )

    def fetch_candles(self, ccxt_symbol: str, timeframe: str, *, since_ms: int, limit: int) -> list[list]:
        """Up to ``limit`` bars from ``since_ms`` on, oldest first: [open_time_ms, open, high, low, close, volume]."""
        with ccxt_errors_mapped():
            if not self._client.markets:
                self._client.load_markets()
            return self._client.fetch_ohlcv(ccxt_symbol, timeframe, since=since_ms, limit=limit)

    # ------------------------------------------------------------------------------------------------ order side

    def symbol_for(self, instrument) -> str:
        """The unified ccxt symbol the order side speaks ("BTC/USDT:USDT") of a pairs.models.Instrument."""
        if not instrument.ccxt_symbol:
            raise NotSupported(
                f"instrument {instrument.symbol} has no ccxt symbol (imported from files?): sync the universe from "
                "the exchange before trading it"
            )
        return instrument.ccxt_symbol

    def _ensure_markets(self) -> None:
        if not self._client.markets:
            self._client.load_markets()

    def _settle_of(self, symbol: str) -> str:
        market = (self._client.markets or {}).get(symbol) or {}
        return market.get("settle") or ""

    def prepare_account(self, symbols: list[str], *, leverage: Decimal | int) -> AccountSetup:
        """Put the account in one-way position mode and set ``leverage`` on each symbol (ccxt unified).

        Idempotent: the exchange's "not modified" answers (110025 position mode, 110043 leverage) count as success.
        """
        leverage = Decimal(leverage)
        if not leverage.is_finite() or leverage <= 0:
            raise InvalidOrder(f"leverage must be a positive number, got {leverage}")
        with ccxt_errors_mapped():
            self._ensure_markets()
        # No symbol: Bybit switches every USDT-settled linear contract (coin=USDT) at once.
        mode_changed = self._unless_not_modified(
            lambda: self._client.set_position_mode(False), _POSITION_MODE_NOT_MODIFIED
        )
        changed = []
        for symbol in symbols:
            if self._unless_not_modified(
                lambda symbol=symbol: self._client.set_leverage(_plain(leverage), symbol), _LEVERAGE_NOT_MODIFIED
            ):
                changed.append(symbol)
        return AccountSetup(
            position_mode="one_way",
            position_mode_changed=mode_changed,
            leverage=leverage,
            leverage_changed=tuple(changed),
        )

    @staticmethod
    def _unless_not_modified(call, not_modified_codes: frozenset[str]) -> bool:
        """Run a settings call; True if it changed something, False if the exchange says it already was so."""
        try:
            call()
        except ccxt.NoChange:
            return False
        except ccxt.BaseError as exc:
            if isinstance(exc, ccxt.ExchangeError) and _ret_code(exc) in not_modified_codes:
                return False
            raise map_ccxt_error(exc) from None
        return True

    def _exact_precision(self, symbol: str, value: Decimal, to_precision, what: str) -> str:
        """``value`` as the exchange text, or InvalidOrder if the market's precision would change it."""
        text = _plain(value)
        with ccxt_errors_mapped():
            formatted = to_precision(symbol, text)
        if Decimal(formatted) != value:
            market = self._client.market(symbol)
            step = market["precision"].get("amount" if what == "qty" else "price")
            raise InvalidOrder(
                f"{what} {text} of {symbol} is not a multiple of its step {_plain(Decimal(str(step)))} "
                f"(the exchange would make it {formatted}): round it before placing the order"
            )
        return text

    def place_order(
        self,
        *,
        symbol: str,
        side: str,
        qty: Decimal,
        client_order_id: str,
        reduce_only: bool = False,
        order_type: str = "market",
        price: Decimal | None = None,
    ) -> OrderAck:
        """Place an order, idempotently per ``client_order_id`` (Bybit orderLinkId).

        Nothing is rounded: a ``qty`` (or limit ``price``) off the market's step raises InvalidOrder before any
        request. If the exchange already has an order with this client id (a retried create reached it before), that
        order is returned with ``existing=True``. If the create call fails in a way that leaves open whether it was
        applied (timeout, dropped connection, gateway error), the order is looked up by client id: found, it is
        returned with ``existing=True``; not found, the temporary error is raised and the caller may retry with the
        SAME client id.
        """
        if side not in _ORDER_SIDES:
            raise InvalidOrder(f"side must be 'buy' or 'sell', got {side!r}")
        if order_type not in _ORDER_TYPES:
            raise InvalidOrder(f"order_type must be 'market' or 'limit', got {order_type!r}")
        if not isinstance(client_order_id, str) or not _CLIENT_ORDER_ID.match(client_order_id):
            raise InvalidOrder(
                f"client order id {client_order_id!r} must be 1-36 letters, digits, '-' or '_' (Bybit orderLinkId)"
            )
        if not isinstance(qty, Decimal) or not qty.is_finite() or qty <= 0:
            raise InvalidOrder(f"qty must be a positive Decimal, got {qty!r}")
        if order_type == "limit":
            if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
                raise InvalidOrder(f"a limit order needs a positive Decimal price, got {price!r}")
        elif price is not None:
            raise InvalidOrder("a market order takes no price")
        with ccxt_errors_mapped():
            self._ensure_markets()
            self._client.market(symbol)  # an unknown symbol fails here, before any order request
        amount = self._exact_precision(symbol, qty, self._client.amount_to_precision, "qty")
        limit_price = None
        if price is not None:
            limit_price = self._exact_precision(symbol, price, self._client.price_to_precision, "price")
        params = {"clientOrderId": client_order_id, "positionIdx": 0, "reduceOnly": bool(reduce_only)}
        try:
            with ccxt_errors_mapped():
                created = self._client.create_order(symbol, order_type, side, amount, limit_price, params)
        except DuplicateClientOrderId:
            # The order exists: fetch it. A lookup that fails raises its own (temporary) error: retrying is safe.
            state = self.order_by_client_id(symbol, client_order_id)
            if state is None:
                raise
            if state.side != side or state.reduce_only != bool(reduce_only):
                raise DuplicateClientOrderId(
                    f"client order id {client_order_id} on {symbol} is taken by a different order "
                    f"({state.side}, reduce_only={state.reduce_only}, qty {state.qty})"
                ) from None
            logger.info("order %s on %s already existed (%s): not placed again", client_order_id, symbol,
                        state.status)  # fmt: skip
            return OrderAck(state.exchange_order_id, client_order_id, symbol, existing=True, state=state)
        except TemporaryExchangeError as exc:
            if isinstance(exc, RateLimited):
                raise  # refused before it was applied
            try:
                state = self.order_by_client_id(symbol, client_order_id)
            except ExchangeError as lookup_exc:
                logger.warning("order %s on %s: lookup after %s failed too (%s)", client_order_id, symbol,
                               type(exc).__name__, lookup_exc)  # fmt: skip
                state = None
            if state is None:
                raise
            logger.warning("order %s on %s: create failed (%s) but the exchange has it (%s)", client_order_id,
                           symbol, type(exc).__name__, state.status)  # fmt: skip
            return OrderAck(state.exchange_order_id, client_order_id, symbol, existing=True, state=state)
        return OrderAck(
            exchange_order_id=str(created.get("id") or ""),
            client_order_id=str(created.get("clientOrderId") or client_order_id),
            symbol=symbol,
        )

    def order_by_client_id(self, symbol: str, client_order_id: str) -> OrderState | None:
        """The order with this client id (orderLinkId) on ``symbol``, or None if the exchange has none.

        Asks the open-orders list (which, asked by orderLinkId, also holds recently closed orders) and then the order
        history, both filtered by orderLinkId; fetch_order would only reach the last 500 orders.
        """
        with ccxt_errors_mapped():
            self._ensure_markets()
            settle = self._settle_of(symbol)
            for fetch in (self._client.fetch_open_orders, self._client.fetch_canceled_and_closed_orders):
                orders = fetch(symbol, None, None, {"orderLinkId": client_order_id})
                matches = [o for o in orders if o.get("clientOrderId") == client_order_id]
                if matches:
                    newest = max(matches, key=lambda o: o.get("timestamp") or 0)
                    return _order_state(newest, settle=settle)
        return None

    def fills_of(
        self,
        symbol: str,
        client_order_id: str | None = None,
        *,
        exchange_order_id: str | None = None,
        since_ms: int | None = None,
    ) -> list[FillState]:
        """The trades (executions) of one order, oldest first; give its client id or its exchange id.

        Bybit's execution list covers the last 7 days unless ``since_ms`` says otherwise.
        """
        if (client_order_id is None) == (exchange_order_id is None):
            raise ValueError("give exactly one of client_order_id and exchange_order_id")
        params = {"orderLinkId": client_order_id} if client_order_id is not None else {"orderId": exchange_order_id}
        fills: dict[str, tuple[int, int, FillState]] = {}
        cursor = None
        with ccxt_errors_mapped():
            self._ensure_markets()
            for _ in range(_MAX_PAGES):
                page_params = dict(params, cursor=cursor) if cursor else dict(params)
                rows = self._client.fetch_my_trades(symbol, since_ms, _FILLS_PER_REQUEST, page_params)
                for row in rows:
                    fill = _fill_state(row)
                    if (client_order_id is not None and fill.client_order_id != client_order_id) or (
                        exchange_order_id is not None and fill.exchange_order_id != exchange_order_id
                    ):
                        continue
                    # Bybit's seq orders executions of the same millisecond
                    seq = _first_decimal((row.get("info") or {}).get("seq"))
                    fills[fill.exec_id] = (fill.time_ms, int(seq) if seq is not None else 0, fill)
                cursor = _next_cursor(rows)
                if not rows or not cursor:
                    break
        return [fill for _, _, fill in sorted(fills.values(), key=lambda item: item[:2])]

    def cancel(self, symbol: str, client_order_id: str) -> OrderState:
        """Cancel an order by client id and return its state afterwards.

        Idempotent: an order that already ended (filled, cancelled) is returned as it is; OrderNotFound only if the
        exchange has no order with this client id.
        """
        try:
            with ccxt_errors_mapped():
                self._ensure_markets()
                self._client.cancel_order(None, symbol, {"orderLinkId": client_order_id})
        except (OrderNotFound, InvalidOrder):
            # Bybit: 110001 "order not exists or too late to cancel", 110008 finished, 110010 already cancelled
            state = self.order_by_client_id(symbol, client_order_id)
            if state is None or state.is_open:
                raise
            return state
        state = self.order_by_client_id(symbol, client_order_id)
        if state is None:
            raise OrderNotFound(f"order {client_order_id} on {symbol} was cancelled but cannot be found")
        return state

    def open_orders(self, *, settle_coin: str = "USDT") -> list[OrderState]:
        """Every order still working on contracts settled in ``settle_coin`` (all symbols), oldest first."""
        states: list[OrderState] = []
        cursor = None
        with ccxt_errors_mapped():
            self._ensure_markets()
            for _ in range(_MAX_PAGES):
                params = {"settleCoin": settle_coin, "limit": 50}
                if cursor:
                    params["cursor"] = cursor
                page = self._client.fetch_open_orders(None, None, None, params)
                states.extend(_order_state(order, settle=settle_coin) for order in page)
                cursor = _next_cursor(page)
                if not page or not cursor:
                    break
        return sorted((s for s in states if s.is_open), key=lambda s: s.created_ms or 0)

    def positions(self, symbols: list[str] | None = None, *, settle_coin: str = "USDT") -> list[PositionState]:
        """Open (non-zero) positions settled in ``settle_coin``, all or those of ``symbols``, by symbol.

        A symbol without a position is simply absent. (ccxt's Bybit fetch_positions takes at most one symbol, so
        all positions are listed and filtered here.)
        """
        rows: list[dict] = []
        cursor = None
        with ccxt_errors_mapped():
            self._ensure_markets()
            wanted = None if symbols is None else {self._client.market(s)["symbol"] for s in symbols}
            for _ in range(_MAX_PAGES):
                params = {"settleCoin": settle_coin, "limit": _POSITIONS_PER_REQUEST}
                if cursor:
                    params["cursor"] = cursor
                page = self._client.fetch_positions(None, params)
                rows.extend(page)
                cursor = _next_cursor(page)
                if not page or not cursor:
                    break
        states = [_position_state(row) for row in rows]
        return sorted((p for p in states if p.qty and (wanted is None or p.symbol in wanted)), key=lambda p: p.symbol)

    def balance(self, coin: str = "USDT") -> BalanceState:
        """Equity, wallet balance and available margin of one coin of the unified account (zeros if absent)."""
        with ccxt_errors_mapped():
            raw = self._client.fetch_balance({"coin": coin})
        info = raw.get("info") or {}
        for account in (info.get("result") or {}).get("list") or []:
            for entry in account.get("coin") or []:
                if entry.get("coin") != coin:
                    continue
                wallet = _first_decimal(entry.get("walletBalance")) or Decimal(0)
                upnl = _first_decimal(entry.get("unrealisedPnl")) or Decimal(0)
                equity = _first_decimal(entry.get("equity")) or wallet + upnl
                used = sum(
                    (_first_decimal(entry.get(key)) or Decimal(0) for key in ("totalPositionIM", "totalOrderIM",
                                                                                "locked")),
                    Decimal(0),
                )  # fmt: skip
                return BalanceState(coin, equity, wallet, equity - used, upnl)
        unified = raw.get(coin) or {}
        total = _first_decimal(unified.get("total")) or Decimal(0)
        free = _first_decimal(unified.get("free"))
        return BalanceState(coin, total, total, free if free is not None else total, Decimal(0))

    def funding_payments(self, *, since_ms: int, until_ms: int, settle_coin: str = "USDT") -> list[FundingState]:
        """The funding this account paid or received on its ``settle_coin`` positions in [since_ms, until_ms]
        (both inclusive), oldest first.

        Bybit's execution list (execType "Funding", through ccxt's fetch_funding_history) spans at most 7 days a
        request: a longer window is asked in 7-day pieces, each read page by page (cursor). Symbols are ccxt
        unified; every number comes from the exchange's raw strings.
        """
        if since_ms > until_ms:
            raise ValueError(f"since_ms {since_ms} is after until_ms {until_ms}")
        payments: dict[str, tuple[int, int, str, FundingState]] = {}
        with ccxt_errors_mapped():
            self._ensure_markets()
            start = since_ms
            while start <= until_ms:
                end = min(start + _EXECUTION_WINDOW_MS, until_ms)
                for row in self._funding_rows(start, end):
                    info = row.get("info") or {}
                    symbol = self._funding_symbol(row, settle_coin)
                    if symbol is None:
                        continue
                    payment = _funding_state(row, symbol)
                    if payment is None or not since_ms <= payment.time_ms <= until_ms:
                        continue
                    seq = _first_decimal(info.get("seq"))
                    key = str(info.get("execId") or row.get("id") or f"{symbol}@{payment.time_ms}")
                    payments[key] = (payment.time_ms, int(seq) if seq is not None else 0, symbol, payment)
                start = end + 1
        return [payment for *_, payment in sorted(payments.values(), key=lambda item: item[:3])]

    def _funding_rows(self, start_ms: int, end_ms: int) -> list[dict]:
        """Every funding execution in [start_ms, end_ms] (at most 7 days apart), all pages."""
        rows: list[dict] = []
        cursor = None
        seen: set[str] = set()
        for _ in range(_MAX_FUNDING_PAGES_PER_WINDOW):
            # ccxt sends its ``limit`` as "size", which Bybit's execution list does not know: "limit" goes in params
            params = {"until": end_ms, "limit": _FILLS_PER_REQUEST}
            if cursor:
                params["cursor"] = cursor
            page = self._client.fetch_funding_history(None, start_ms, _FILLS_PER_REQUEST, params)
            rows.extend(page)
            cursor = _next_cursor(page)
            if not page or not cursor:
                return rows
            if cursor in seen:
                raise PermanentExchangeError(f"funding history: the exchange repeated the page cursor {cursor!r}")
            seen.add(cursor)
        raise PermanentExchangeError(
            f"funding history from {start_ms} to {end_ms}: more than {_MAX_FUNDING_PAGES_PER_WINDOW} pages"
        )

    def _funding_symbol(self, row: dict, settle_coin: str) -> str | None:
        """The unified symbol of a funding row if its contract settles in ``settle_coin``, else None.

        A contract no longer in the markets (delisted since) keeps its money: a linear id "XYZUSDT" ending in the
        settle coin is taken as "XYZ/USDT:USDT".
        """
        markets = self._client.markets or {}
        symbol = row.get("symbol") or ""
        market = markets.get(symbol)
        if market is not None:
            return symbol if market.get("settle") == settle_coin else None
        market_id = str((row.get("info") or {}).get("symbol") or symbol)
        base = market_id.removesuffix(settle_coin)
        if base and base != market_id and base.isalnum():
            return f"{base}/{settle_coin}:{settle_coin}"
        return None
