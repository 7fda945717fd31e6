"""Our own exchange error hierarchy. Only execution/exchanges knows ccxt; everything else sees these.

Temporary errors may succeed when retried (network, timeouts, rate limits, exchange maintenance); permanent ones
won't (bad credentials, invalid orders, insufficient funds) and must surface as a clear error on the trade.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base of every exchange failure; ``retryable`` tells the retrier what to do."""

    retryable = False


class TemporaryExchangeError(ExchangeError):
    retryable = True


class RateLimited(TemporaryExchangeError):
    pass


class RequestTimedOut(TemporaryExchangeError):
    """The request may or may not have been applied: an order call that times out must be looked up, not resent
    blindly (the deterministic client order id makes the resend safe, but the lookup is cheaper)."""


class PermanentExchangeError(ExchangeError):
    pass


class AuthenticationFailed(PermanentExchangeError):
    pass


class InvalidOrder(PermanentExchangeError):
    pass


class InsufficientFunds(PermanentExchangeError):
    pass


class DuplicateClientOrderId(PermanentExchangeError):
    """The exchange already has an order with this client order id: a retried create reached it before."""


class OrderNotFound(PermanentExchangeError):
    pass


class NotSupported(PermanentExchangeError):
    pass
