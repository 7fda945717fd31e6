"""Order arguments every adapter checks the same way before anything is sent (or simulated).

An argument that would be rejected by the venue is refused here with ``InvalidOrder`` and a message that names it,
so a bug in sizing surfaces before a request, identically on Bybit and on paper.
"""

from __future__ import annotations

import re
from decimal import Decimal

from exchanges.errors import InvalidOrder

# Bybit orderLinkId: at most 36 characters of letters, digits, dashes and underscores.
CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")


def check_order_arguments(*, side: str, order_type: str, client_order_id: str, qty: Decimal,
                          price: Decimal | None) -> None:
    """InvalidOrder unless side, type, client id, quantity and (for a limit order only) price are well formed."""
    if side not in ORDER_SIDES:
        raise InvalidOrder(f"side must be 'buy' or 'sell', got {side!r}")
    if order_type not in ORDER_TYPES:
        raise InvalidOrder(f"order_type must be 'market' or 'limit', got {order_type!r}")
    if not isinstance(client_order_id, str) or not CLIENT_ORDER_ID.match(client_order_id):
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


def check_leverage(leverage: Decimal | int) -> Decimal:
    leverage = Decimal(leverage)
    if not leverage.is_finite() or leverage <= 0:
        raise InvalidOrder(f"leverage must be a positive number, got {leverage}")
    return leverage
