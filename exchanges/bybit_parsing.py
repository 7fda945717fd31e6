"""Bybit v5 answers (as ccxt hands them over, raw strings in ``info``) turned into ``exchanges.types``.

Every number is read from the exchange's own strings first and ccxt's floats only as a fallback, so a price or a
quantity arrives exactly as the exchange wrote it.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from core.secrets import redact
from exchanges.ccxt_client import first_decimal as _first_decimal
from exchanges.types import (
    CANCELLED,
    FILLED,
    PARTIALLY_FILLED,
    REJECTED,
    SUBMITTED,
    FillState,
    FundingState,
    OrderState,
    PositionState,
)

logger = logging.getLogger(__name__)

# Bybit's own order statuses (v5). Open ones can still fill; the rest are final.
_BYBIT_OPEN_STATUSES = frozenset({"Created", "New", "PartiallyFilled", "PendingCancel", "Untriggered", "Triggered",
                                  "Active"})  # fmt: skip


def _as_bool(value) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


def order_status(raw: str, unified: str | None, filled: Decimal, qty: Decimal) -> tuple[str, bool]:
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


def _order_fee(order: dict, info: dict, settle: str) -> tuple[Decimal, str]:
    """(cumulative fee, its currency): Bybit's cumExecFee and cumFeeDetail first, ccxt's fee as a fallback."""
    fee_info = order.get("fee") or {}
    fee = _first_decimal(info.get("cumExecFee"), fee_info.get("cost")) or Decimal(0)
    fee_detail = info.get("cumFeeDetail") or {}
    return fee, next(iter(fee_detail), None) or fee_info.get("currency") or settle


def _order_reduce_only(order: dict, info: dict) -> bool:
    reduce_only = _as_bool(info.get("reduceOnly"))
    return bool(order.get("reduceOnly")) if reduce_only is None else reduce_only


def _order_ids(order: dict, info: dict) -> tuple[str, str]:
    """(the exchange's order id, our client order id): ccxt's unified fields, else Bybit's orderId / orderLinkId."""
    return (str(order.get("id") or info.get("orderId") or ""),
            str(order.get("clientOrderId") or info.get("orderLinkId") or ""))


def order_state(order: dict, *, settle: str = "") -> OrderState:
    info = order.get("info") or {}
    qty = _first_decimal(info.get("qty"), order.get("amount")) or Decimal(0)
    filled = _first_decimal(info.get("cumExecQty"), order.get("filled")) or Decimal(0)
    avg_price = _first_decimal(info.get("avgPrice"), order.get("average"))
    if avg_price is not None and (avg_price <= 0 or not filled):
        avg_price = None  # Bybit writes "" or "0" before the first fill
    fee, fee_currency = _order_fee(order, info, settle)
    order_type = (order.get("type") or str(info.get("orderType") or "")).lower()
    raw_status = str(info.get("orderStatus") or "")
    status, is_open = order_status(raw_status, order.get("status"), filled, qty)
    exchange_order_id, client_order_id = _order_ids(order, info)
    return OrderState(
        exchange_order_id=exchange_order_id,
        client_order_id=client_order_id,
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
        reduce_only=_order_reduce_only(order, info),
        limit_price=_first_decimal(info.get("price"), order.get("price")) if order_type == "limit" else None,
        raw_status=raw_status or str(order.get("status") or ""),
        created_ms=order.get("timestamp"),
        updated_ms=order.get("lastUpdateTimestamp") or order.get("lastTradeTimestamp"),
    )


def fill_state(trade: dict) -> FillState:
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
        exec_type=str(info.get("execType") or "Trade"),
    )


def position_state(position: dict) -> PositionState:
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


def funding_state(row: dict, symbol: str) -> FundingState | None:
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


def next_cursor(rows: list[dict]) -> str | None:
    """ccxt's Bybit parsers put the answer's nextPageCursor into one row's info (the first of the raw list, which
    need not be the first after ccxt sorted the rows)."""
    for row in rows:
        cursor = (row.get("info") or {}).get("nextPageCursor")
        if cursor:
            return str(cursor)
    return None
