"""Retry of temporary exchange errors with exponential backoff and jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from execution.exchanges.errors import ExchangeError

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
