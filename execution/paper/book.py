"""The paper exchange's arithmetic and storage helpers: exact column rounding, epoch milliseconds, netting a fill
into a position, and the savepoint-free read-then-write block its state changes run in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import TypeVar

from django.db import DatabaseError, transaction

from core.db import DECIMAL_PLACES

_R = TypeVar("_R")
_A = TypeVar("_A")

ORDER_ID_PREFIX = "paper-order-"
FILL_ID_PREFIX = "paper-"
_STORED = Decimal(1).scaleb(-DECIMAL_PLACES)  # the columns' 12 decimal places
_WIDE = Context(prec=40)  # quantizing 32-digit column values needs more than the default 28 digits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def stored(value: Decimal) -> Decimal:
    """``value`` as its Decimal(32,12) column keeps it, so the computation goes on with what the database holds."""
    return value.quantize(_STORED, context=_WIDE)


def ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def clean(value: Decimal | None) -> Decimal | None:
    """A column value without the 12-place padding ("0.010000000000" -> "0.01", "50000.000000000000" -> "50000"),
    as the exchange writes numbers, so answers read the same as CcxtExchange's."""
    if value is None:
        return None
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value



def read_then_write(read: Callable[[], _R], write: Callable[[_R], _A | Exception]) -> _A:
    """``write(read())`` in one transaction without a savepoint (two round trips saved a call, in a replay's
    transaction), under the account's locks that ``read`` takes. An error of ``read`` (a feed's bug, an account gone:
    nothing is written yet) and an exception ``write`` returns instead of raising (a refused order) leave the block
    normally and are raised after it, so a caller that catches them and goes on in the same transaction (a bot
    rejecting an order, or isolating one trade's error) still can. ``write`` raises nothing but the database, whose
    errors propagate and end a tick anyway."""
    with transaction.atomic(savepoint=False):
        try:
            result = read()
        except DatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised after the block
            answer = exc
        else:
            answer = write(result)
    if isinstance(answer, Exception):
        raise answer
    return answer


def net_fill(held: Decimal, avg_price: Decimal, signed: Decimal, price: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(new signed qty, new average entry price, realised PnL) after a fill of ``signed`` at ``price``."""
    new_qty = held + signed
    if held == 0 or (held > 0) == (signed > 0):
        return new_qty, (abs(held) * avg_price + abs(signed) * price) / abs(new_qty), Decimal(0)
    closed = min(abs(signed), abs(held))
    realised = closed * (price - avg_price) * (1 if held > 0 else -1)
    if new_qty == 0:
        return new_qty, Decimal(0), realised
    if (new_qty > 0) != (held > 0):
        return new_qty, price, realised  # flipped: the rest opens at the fill price
    return new_qty, avg_price, realised


def order_id(pk: int) -> str:
    return f"{ORDER_ID_PREFIX}{pk}"


def order_pk(exchange_order_id: str | None) -> int | None:
    if not exchange_order_id or not exchange_order_id.startswith(ORDER_ID_PREFIX):
        return None
    digits = exchange_order_id.removeprefix(ORDER_ID_PREFIX)
    return int(digits) if digits.isascii() and digits.isdigit() else None

