"""Our own exchange error hierarchy. Only exchanges/ knows ccxt; everything else sees these.

Each class says what the bot does about it. The line that matters most for money runs between two families:

- ``Refused``: the exchange answered that it did NOT apply the request (a validation failure, insufficient funds,
  bad credentials, a reduce-only order with nothing to reduce). Only these may book an order as rejected.
- everything else, above all ``OrderOutcomeUnknown``: the answer doesn't prove what happened (an internal error,
  a gateway page, a dropped connection, a timeout, an unparseable body, a code we don't know). The order may have
  been executed: it is looked up by its client order id before anything is decided, never taken for rejected.

Temporary errors may succeed when retried; ``retryable`` tells ``exchanges.retry`` what to do.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base of every exchange failure; ``retryable`` tells the retrier what to do."""

    retryable = False


class TemporaryExchangeError(ExchangeError):
    """May succeed when tried again (network, maintenance, a lagging list): retried with backoff; if it lasts, the
    tick stops and the next one carries on from the database."""

    retryable = True


class RefusedTemporarily(TemporaryExchangeError):
    """The exchange refused the request without applying it, for a reason that passes (rate limit, a request
    timestamp outside the receive window): retried with backoff."""


class RateLimited(RefusedTemporarily):
    """Too many requests (Bybit 10006, HTTP 429): nothing was applied; retried after a pause."""


class OrderOutcomeUnknown(TemporaryExchangeError):
    """The request may or may not have been applied (Bybit 10016, a 5xx page, a dropped connection, an answer we
    can't read, a retCode not known to prove anything). For an order: look it up by its client order id (open
    orders, order history, executions) before deciding anything; the trade stays where it is until the look-up
    answers. A resend with the same client id is safe (the exchange refuses a second order under it)."""


class RequestTimedOut(OrderOutcomeUnknown):
    """No answer in time: the request may or may not have been applied (see ``OrderOutcomeUnknown``)."""


class PermanentExchangeError(ExchangeError):
    """Won't succeed as it is; not retried. Doesn't prove by itself that an order was not executed: only a
    ``Refused`` does."""


class Refused(PermanentExchangeError):
    """The exchange answered that it did not apply the request: an order raising this was never executed, and may
    be booked as rejected."""


class AuthenticationFailed(Refused):
    """Bad or expired key, wrong permissions or IP: nothing is traded until a person fixes the credentials."""


class InvalidOrder(Refused):
    """The order's arguments were refused (step, minimum, price band, parameters): a sizing bug or a changed
    instrument rule; the trade handles it as a rejected leg."""


class ReduceOnlyRejected(InvalidOrder):
    """A reduce-only order refused because there is no position to reduce or it would increase one (Bybit
    110017): the leg is already flat (or reversed) at the exchange. The bot reconciles the trade against the
    exchange's position and executions instead of retrying the close."""


class InsufficientFunds(Refused):
    """Not enough margin for the order: a rejected leg; the account's limits or capital need a look."""


class NotSupported(Refused):
    """Something the venue or the adapter can't do (a mode, an instrument without a symbol): refused before any
    request."""


class DuplicateClientOrderId(PermanentExchangeError):
    """The exchange already has an order with this client order id: a retried create reached it before. The order
    exists: it is looked up, never taken for rejected."""


class OrderNotFound(PermanentExchangeError):
    """The exchange has no order with this id (a cancel of an order that never arrived)."""
