"""Retry of temporary exchange errors with exponential backoff and jitter, for one call or a whole venue."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from exchanges.errors import ExchangeError, OrderOutcomeUnknown, Refused

logger = logging.getLogger(__name__)
T = TypeVar("T")


def call_with_retry(
    operation: Callable[[], T],
    *,
    description: str,
    attempts: int = 5,
    base_delay_s: float = 0.5,
    max_delay_s: float = 20.0,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run ``operation``; on a retryable ExchangeError wait (0.5 s, 1 s, 2 s, ... capped, with jitter) and retry.

    Permanent errors and the last temporary one are raised as they are.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except ExchangeError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1)) * (0.75 + random.random() / 2)
            logger.warning("%s failed (%s: %s); retry %d/%d in %.1fs", description, type(exc).__name__, exc,
                           attempt, attempts - 1, delay)
            (sleep or time.sleep)(delay)
    raise AssertionError("unreachable")


class RetryingExchange:
    """A TradingExchange that retries every call's temporary errors (``call_with_retry``), wrapped once around a
    venue instead of a lambda at each call site. Safe for every call: reads are idempotent, and an order is placed
    with its client order id, which the exchange refuses to use twice."""

    def __init__(self, exchange, *, sleep: Callable[[float], None] | None = None, attempts: int = 5):
        self.inner = exchange
        self._sleep = sleep
        self._attempts = attempts

    def _call(self, description: str, operation: Callable[[], T]) -> T:
        return call_with_retry(operation, description=description, attempts=self._attempts, sleep=self._sleep)

    def symbol_for(self, instrument) -> str:
        return self.inner.symbol_for(instrument)

    def prepare_account(self, symbols, *, leverage):
        return self._call(f"account set-up for {', '.join(symbols)}",
                          lambda: self.inner.prepare_account(symbols, leverage=leverage))

    def place_order(self, *, symbol, side, qty, client_order_id, reduce_only=False, order_type="market", price=None,
                    before_retry: Callable[[], None] | None = None):
        """Place an order, retrying temporary errors under the same client id. ``before_retry`` runs before every
        attempt after the first: a retry is a send too, and the caller may no longer be allowed to send (the bot's
        lease passed to another worker while this one waited: it raises, and nothing more goes out)."""
        unknown: list[OrderOutcomeUnknown] = []
        attempts: list[int] = []

        def place():
            if attempts and before_retry is not None:
                before_retry()
            attempts.append(1)
            try:
                return self.inner.place_order(symbol=symbol, side=side, qty=qty, client_order_id=client_order_id,
                                              reduce_only=reduce_only, order_type=order_type, price=price)
            except OrderOutcomeUnknown as exc:
                unknown.append(exc)
                raise
            except Refused as exc:
                if not unknown:
                    raise
                # A refusal proves only that this attempt did nothing: the earlier one may have executed (and taken
                # the margin, or flattened the position a reduce-only retry now finds gone), so the order stays
                # unknown and is looked up by its client id.
                outcome = OrderOutcomeUnknown(
                    f"{type(exc).__name__} on a retry of {client_order_id} after an attempt whose outcome is unknown "
                    f"({unknown[-1]}): {exc}")
                outcome.retryable = False  # another retry would be refused the same: the look-up decides now
                raise outcome from exc

        return self._call(f"order {client_order_id}", place)

    def order_by_client_id(self, symbol, client_order_id, *, since_ms=None):
        return self._call(f"look-up of {client_order_id}",
                          lambda: self.inner.order_by_client_id(symbol, client_order_id, since_ms=since_ms))

    def fills_of(self, symbol, client_order_id=None, *, exchange_order_id=None, since_ms=None):
        return self._call(f"fills of {client_order_id or exchange_order_id}", lambda: self.inner.fills_of(
            symbol, client_order_id, exchange_order_id=exchange_order_id, since_ms=since_ms))

    def executions(self, symbol, *, since_ms):
        return self._call(f"executions on {symbol}", lambda: self.inner.executions(symbol, since_ms=since_ms))

    def cancel(self, symbol, client_order_id):
        return self._call(f"cancel of {client_order_id}", lambda: self.inner.cancel(symbol, client_order_id))

    def open_orders(self, *, settle_coin="USDT"):
        return self._call("open orders", lambda: self.inner.open_orders(settle_coin=settle_coin))

    def positions(self, symbols=None, *, settle_coin="USDT"):
        return self._call("positions", lambda: self.inner.positions(symbols, settle_coin=settle_coin))

    def balance(self, coin="USDT"):
        return self._call("balance", lambda: self.inner.balance(coin))

    def funding_payments(self, *, since_ms, until_ms, settle_coin="USDT"):
        return self._call("funding payments", lambda: self.inner.funding_payments(
            since_ms=since_ms, until_ms=until_ms, settle_coin=settle_coin))
