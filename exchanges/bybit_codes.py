"""Bybit v5's retCodes, and what each proves about the request that got it.

An error answer proves that nothing happened only when its code says so: a validation failure, missing funds, an
authentication problem, a rate limit, a reduce-only order with nothing to reduce. Every other answer (10016
"internal/system error", an HTML 5xx page, a dropped connection, a timeout, a body we can't read, a code that is
not listed here) leaves open whether the order was executed: ``OrderOutcomeUnknown``, and the order is looked up by
its orderLinkId before anything is decided. Only the retCode field counts: the same digits elsewhere in a body (a
millisecond timestamp, a price) mean nothing.
"""

from __future__ import annotations

import re

import ccxt

from exchanges.ccxt_client import error_text, map_ccxt_error
from exchanges.errors import (
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    OrderOutcomeUnknown,
    RateLimited,
    ReduceOnlyRejected,
    RefusedTemporarily,
)

# retCode -> (our error, what the code proves). Each of these answers means the exchange did not apply the request.
REFUSED: dict[str, tuple[type[ExchangeError], str]] = {
    "10001": (InvalidOrder, "parameter error: the request failed validation"),
    "10002": (RefusedTemporarily, "request timestamp outside the receive window: refused before processing"),
    "10003": (AuthenticationFailed, "invalid API key"),
    "10004": (AuthenticationFailed, "invalid signature"),
    "10005": (AuthenticationFailed, "the key lacks the permission"),
    "10006": (RateLimited, "too many visits: refused by the rate limiter"),
    "10010": (AuthenticationFailed, "request IP not on the key's whitelist"),
    "10017": (InvalidOrder, "route not found or method not supported"),
    "110003": (InvalidOrder, "order price outside the permitted range"),
    "110004": (InsufficientFunds, "wallet balance insufficient"),
    "110007": (InsufficientFunds, "available balance insufficient"),
    "110009": (InvalidOrder, "too many stop orders"),
    "110012": (InsufficientFunds, "available balance insufficient"),
    "110013": (InvalidOrder, "the leverage is refused by the risk limit"),
    "110017": (ReduceOnlyRejected, "reduce-only: the position is zero or the order would increase it"),
    "110020": (InvalidOrder, "more than 500 active orders"),
    "110021": (InvalidOrder, "the open-interest limit would be exceeded"),
    "110023": (InvalidOrder, "the contract is being delisted: it takes reduce-only orders only"),
    "110024": (InvalidOrder, "the position mode can't be switched while a position is open"),
    "110028": (InvalidOrder, "the position mode can't be switched while orders are open"),
    "110040": (InvalidOrder, "the order would trigger a liquidation"),
    "110094": (InvalidOrder, "order value below the minimum notional"),
    # The order's quantity and value checks (the unified account's codes, which the fake Bybit answers too).
    "170135": (InvalidOrder, "order quantity above the maximum"),
    "170136": (InvalidOrder, "order quantity below the minimum"),
    "170137": (InvalidOrder, "order quantity off the quantity step"),
    "170140": (InvalidOrder, "order value below the minimum notional"),
}
# A re-used orderLinkId: the order exists (a retried create reached it before). 110072 "OrderLinkedID is duplicate"
# is the derivatives (linear) answer; the others come from spot and older APIs.
DUPLICATE_ORDER = frozenset({"170141", "12141", "30001", "110072"})
# Answers to a cancel of an order that is no longer working: its state is read instead.
CANCEL_TOO_LATE: dict[str, type[ExchangeError]] = {
    "110001": OrderNotFound,  # order does not exist or too late to cancel
    "110008": InvalidOrder,  # order already filled or cancelled
    "110010": InvalidOrder,  # order already cancelled
}
# "Not modified" answers: the account is already as asked.
POSITION_MODE_NOT_MODIFIED = frozenset({"110025"})
LEVERAGE_NOT_MODIFIED = frozenset({"110043"})

_RET_CODE = re.compile(r'"retCode"\s*:\s*"?(\d+)')


def ret_code(exc: Exception) -> str | None:
    """The retCode of a Bybit answer quoted in a ccxt exception's message, if any."""
    match = _RET_CODE.search(str(exc))
    return match.group(1) if match else None


def map_bybit_error(exc: Exception) -> ExchangeError:
    """Our error for a ccxt exception on Bybit. An answer with a retCode is judged by the tables above alone: a code
    not listed proves nothing (``OrderOutcomeUnknown``), whatever class ccxt gave it. Without a retCode (network,
    gateway pages, ccxt's own checks before a request) ccxt's class decides (``map_ccxt_error``)."""
    code = ret_code(exc) if isinstance(exc, ccxt.ExchangeError) else None
    if code is None:
        return map_ccxt_error(exc)
    message = error_text(exc)
    if code in DUPLICATE_ORDER:
        return DuplicateClientOrderId(message)
    if code in REFUSED:
        error, proves = REFUSED[code]
        return error(f"{message} ({proves})")
    if code in CANCEL_TOO_LATE:
        return CANCEL_TOO_LATE[code](message)
    return OrderOutcomeUnknown(f"{message} (retCode {code} does not prove what happened)")
