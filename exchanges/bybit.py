"""Bybit v5's order side (linear perpetuals, unified account, one-way mode), in its own subclass of the generic adapter.

Orders carry positionIdx 0 and the client order id as orderLinkId, and are looked up by orderLinkId through the
open-orders and history lists (ccxt's fetch_order only reaches the last 500 orders). Bybit's retCodes are read here,
where their meaning is known; the rest of the system sees ``exchanges.errors``.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import ccxt

from core.formatting import plain as _plain
from exchanges.bybit_codes import LEVERAGE_NOT_MODIFIED, POSITION_MODE_NOT_MODIFIED, map_bybit_error, ret_code
from exchanges.bybit_parsing import fill_state, funding_state, next_cursor, order_state, position_state
from exchanges.ccxt_client import CcxtExchange, ccxt_errors_mapped, error_text, first_decimal
from exchanges.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    OrderOutcomeUnknown,
    PermanentExchangeError,
    Refused,
    RefusedTemporarily,
)
from exchanges.types import (
    FROM_EXECUTIONS,
    AccountSetup,
    BalanceState,
    FillState,
    FundingState,
    OrderAck,
    OrderState,
    PositionState,
    order_state_from_fills,
)
from exchanges.validation import check_leverage, check_order_arguments

logger = logging.getLogger(__name__)

_FILLS_PER_REQUEST = 100  # Bybit's maximum for /v5/execution/list
_POSITIONS_PER_REQUEST = 200  # and for /v5/position/list
_MAX_PAGES = 50
# Bybit's execution list spans at most 7 days a request (endTime - startTime <= 7 days).
_EXECUTION_WINDOW_MS = 7 * 24 * 60 * 60 * 1000
_MAX_FUNDING_PAGES_PER_WINDOW = 200  # 20,000 settlements a week: far more than an account of a few pairs has
# Execution types that move a position: the account's own trades, liquidation and auto-deleveraging fills, the
# settlement of a delisted or delivered contract, block trades and positions moved between accounts (Bybit v5
# execution list; Funding and Settle move money, not the position).
_POSITION_EXEC_TYPES = ("Trade", "BustTrade", "AdlTrade", "Delivery", "BlockTrade", "MovePosition")


def _mapped():
    return ccxt_errors_mapped(map_bybit_error)


class BybitExchange(CcxtExchange):
    """TradingExchange on Bybit v5 (demo or real), plus the public market data of ``CcxtExchange``."""


    def symbol_for(self, instrument) -> str:
        """The unified ccxt symbol the order side speaks ("BTC/USDT:USDT") of a pairs.models.Instrument."""
        if not instrument.ccxt_symbol:
            raise NotSupported(
                f"instrument {instrument.symbol} has no ccxt symbol (imported from files?): sync the universe from "
                "the exchange before trading it"
            )
        return instrument.ccxt_symbol

    def _settle_of(self, symbol: str) -> str:
        market = (self._client.markets or {}).get(symbol) or {}
        return market.get("settle") or ""

    def prepare_account(self, symbols: list[str], *, leverage: Decimal | int) -> AccountSetup:
        """Put the account in one-way position mode and set ``leverage`` on each symbol (ccxt unified).

        Idempotent: the exchange's "not modified" answers (110025 position mode, 110043 leverage) count as success.
        """
        leverage = check_leverage(leverage)
        with _mapped():
            self._ensure_markets()
        # No symbol: Bybit switches every USDT-settled linear contract (coin=USDT) at once.
        mode_changed = self._unless_not_modified(
            lambda: self._client.set_position_mode(False), POSITION_MODE_NOT_MODIFIED
        )
        changed = []
        for symbol in symbols:
            if self._unless_not_modified(
                lambda symbol=symbol: self._client.set_leverage(_plain(leverage), symbol), LEVERAGE_NOT_MODIFIED
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
            if isinstance(exc, ccxt.ExchangeError) and ret_code(exc) in not_modified_codes:
                return False
            raise map_bybit_error(exc) from None
        return True

    def _exact_precision(self, symbol: str, value: Decimal, to_precision, what: str) -> str:
        """``value`` as the exchange text, or InvalidOrder if the market's precision would change it."""
        text = _plain(value)
        with _mapped():
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
        check_order_arguments(side=side, order_type=order_type, client_order_id=client_order_id, qty=qty,
                              price=price)
        with _mapped():
            self._ensure_markets()
            self._client.market(symbol)  # an unknown symbol fails here, before any order request
        amount = self._exact_precision(symbol, qty, self._client.amount_to_precision, "qty")
        limit_price = None
        if price is not None:
            limit_price = self._exact_precision(symbol, price, self._client.price_to_precision, "price")
        params = {"clientOrderId": client_order_id, "positionIdx": 0, "reduceOnly": bool(reduce_only)}
        try:
            with _mapped():
                created = self._client.create_order(symbol, order_type, side, amount, limit_price, params)
        except DuplicateClientOrderId:
            return self._existing_order(symbol, client_order_id, side, reduce_only)
        except (Refused, RefusedTemporarily):
            raise  # the exchange said it did not apply it
        except Exception as exc:  # noqa: BLE001 - any other answer (or none, or one we can't read) proves nothing
            unknown = exc if isinstance(exc, OrderOutcomeUnknown) else OrderOutcomeUnknown(error_text(exc))
            return self._order_after_failed_create(symbol, client_order_id, unknown)
        if not created.get("id"):
            # An answer without the order's id doesn't show that the order exists: it is looked up like any other.
            return self._order_after_failed_create(symbol, client_order_id, OrderOutcomeUnknown(
                f"the create of {client_order_id} on {symbol} was answered without an order id"))
        return OrderAck(
            exchange_order_id=str(created["id"]),
            client_order_id=str(created.get("clientOrderId") or client_order_id),
            symbol=symbol,
        )

    def _existing_order(self, symbol: str, client_order_id: str, side: str, reduce_only: bool) -> OrderAck:
        """The answer to a create the exchange refused because the client id is taken: the order placed before, if
        it is the same one (a retry). A lookup that fails raises its own (temporary) error: retrying is safe."""
        state = self.order_by_client_id(symbol, client_order_id)
        if state is None:
            raise DuplicateClientOrderId(
                f"client order id {client_order_id} on {symbol} is taken, but the order can't be found yet"
            )
        reduce_only_differs = state.raw_status != FROM_EXECUTIONS and state.reduce_only != bool(reduce_only)
        if state.side != side or reduce_only_differs:
            raise DuplicateClientOrderId(
                f"client order id {client_order_id} on {symbol} is taken by a different order "
                f"({state.side}, reduce_only={state.reduce_only}, qty {state.qty})"
            )
        logger.info("order %s on %s already existed (%s): not placed again", client_order_id, symbol, state.status)
        return OrderAck(state.exchange_order_id, client_order_id, symbol, existing=True, state=state)

    def _order_after_failed_create(self, symbol: str, client_order_id: str, exc: OrderOutcomeUnknown) -> OrderAck:
        """A create whose answer doesn't say what happened: the order is looked up by its client id (open orders,
        history, executions). Found, it is returned (``existing=True``); not found (or the look-up failed too),
        ``exc`` (an ``OrderOutcomeUnknown``) is raised: the caller keeps the order unknown and looks again, or
        sends it again under the same client id, which the exchange can't execute twice."""
        try:
            state = self.order_by_client_id(symbol, client_order_id)
        except ExchangeError as lookup_exc:
            logger.warning("order %s on %s: lookup after %s failed too (%s)", client_order_id, symbol,
                           type(exc).__name__, lookup_exc)
            state = None
        if state is None:
            raise exc
        logger.warning("order %s on %s: create failed (%s) but the exchange has it (%s)", client_order_id, symbol,
                       type(exc).__name__, state.status)
        return OrderAck(state.exchange_order_id, client_order_id, symbol, existing=True, state=state)

    def order_by_client_id(self, symbol: str, client_order_id: str, *, since_ms: int | None = None
                           ) -> OrderState | None:
        """The order with this client id (orderLinkId) on ``symbol``, or None if the exchange has none.

        Asks the open-orders list (which, asked by orderLinkId, also holds recently closed orders), then the order
        history, both filtered by orderLinkId (fetch_order would only reach the last 500 orders), then the executions
        since ``since_ms`` (no earlier than the order was planned: Bybit answers only the last 7 days without it):
        an order found only there is reported as ended with what its executions filled. A source that can't be read
        doesn't end the look-up: what another one shows is proof enough; only "none has it" needs every source, so
        a failed source then raises its error (the order stays unknown, never taken for absent).
        """
        failures: list[ExchangeError] = []
        with _mapped():
            self._ensure_markets()
            settle = self._settle_of(symbol)
        for fetch in (self._client.fetch_open_orders, self._client.fetch_canceled_and_closed_orders):
            try:
                with _mapped():
                    orders = fetch(symbol, None, None, {"orderLinkId": client_order_id})
            except ExchangeError as exc:
                failures.append(exc)
                continue
            matches = [o for o in orders if o.get("clientOrderId") == client_order_id]
            if matches:
                newest = max(matches, key=lambda o: o.get("timestamp") or 0)
                return order_state(newest, settle=settle)
        # Neither list shows it (or could be read), but its executions may: an order that traded existed.
        fills = self.fills_of(symbol, client_order_id, since_ms=since_ms)
        if fills:
            return order_state_from_fills(fills, settle)
        if failures:
            raise failures[0]
        return None

    def fills_of(
        self,
        symbol: str,
        client_order_id: str | None = None,
        *,
        exchange_order_id: str | None = None,
        since_ms: int | None = None,
    ) -> list[FillState]:
        """The trades (executions) of one order since ``since_ms``, oldest first; give its client id or its exchange
        id. Give ``since_ms`` (no later than the order was placed): Bybit's execution list answers only the last 7
        days without it, so an older order's fills would be missing. From ``since_ms`` on, the list is read in
        7-day windows (Bybit's limit per request) up to now, as ``executions`` does.
        """
        if (client_order_id is None) == (exchange_order_id is None):
            raise ValueError("give exactly one of client_order_id and exchange_order_id")
        params = {"orderLinkId": client_order_id} if client_order_id is not None else {"orderId": exchange_order_id}

        def mine(fill: FillState) -> bool:
            if client_order_id is not None:
                return fill.client_order_id == client_order_id
            return fill.exchange_order_id == exchange_order_id

        if since_ms is None:
            return self._execution_pages(symbol, params, None, keep=mine)
        found: list[FillState] = []
        for start, end in self._execution_windows(since_ms):
            found.extend(self._execution_pages(symbol, dict(params, endTime=end), start, keep=mine))
        unique = {fill.exec_id: fill for fill in found}  # windows don't overlap; a fill is kept once all the same
        return sorted(unique.values(), key=lambda fill: fill.time_ms)

    def executions(self, symbol: str, *, since_ms: int) -> list[FillState]:
        """Every execution that moved the account's position on ``symbol`` since ``since_ms``, oldest first: its own
        trades whoever placed them (the bot, a person, another program) and liquidation or auto-deleveraging fills.
        Read in 7-day windows (Bybit's limit per request)."""
        found: list[FillState] = []
        for start, end in self._execution_windows(since_ms):
            for exec_type in _POSITION_EXEC_TYPES:
                found.extend(self._execution_pages(symbol, {"execType": exec_type, "endTime": end}, start))
        unique = {fill.exec_id: fill for fill in found}
        return sorted(unique.values(), key=lambda fill: fill.time_ms)

    def _execution_windows(self, since_ms: int):
        """(start, end) windows of the execution list from ``since_ms`` on, 7 days each (Bybit's limit), up to now.
        The last one reaches 7 days past its start, beyond our clock: an exchange clock a little ahead of ours still
        shows its newest executions."""
        now_ms = self._client.milliseconds()
        start = since_ms
        while True:
            end = start + _EXECUTION_WINDOW_MS
            yield start, end
            if end >= now_ms:
                return
            start = end + 1

    def _execution_pages(self, symbol: str, params: dict, since_ms: int | None, keep=None) -> list[FillState]:
        """The executions the list answers for ``params``, every page, oldest first (Bybit's seq orders executions of
        the same millisecond)."""
        fills: dict[str, tuple[int, int, FillState]] = {}
        cursor = None
        with _mapped():
            self._ensure_markets()
            for _ in range(_MAX_PAGES):
                page_params = dict(params, cursor=cursor) if cursor else dict(params)
                rows = self._client.fetch_my_trades(symbol, since_ms, _FILLS_PER_REQUEST, page_params)
                for row in rows:
                    fill = fill_state(row)
                    if keep is not None and not keep(fill):
                        continue
                    seq = first_decimal((row.get("info") or {}).get("seq"))
                    fills[fill.exec_id] = (fill.time_ms, int(seq) if seq is not None else 0, fill)
                cursor = next_cursor(rows)
                if not rows or not cursor:
                    break
        return [fill for _, _, fill in sorted(fills.values(), key=lambda item: item[:2])]

    def cancel(self, symbol: str, client_order_id: str) -> OrderState:
        """Cancel an order by client id and return its state afterwards.

        Idempotent: an order that already ended (filled, cancelled) is returned as it is; OrderNotFound only if the
        exchange has no order with this client id.
        """
        try:
            with _mapped():
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
        with _mapped():
            self._ensure_markets()
            for _ in range(_MAX_PAGES):
                params = {"settleCoin": settle_coin, "limit": 50}
                if cursor:
                    params["cursor"] = cursor
                page = self._client.fetch_open_orders(None, None, None, params)
                states.extend(order_state(order, settle=settle_coin) for order in page)
                cursor = next_cursor(page)
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
        with _mapped():
            self._ensure_markets()
            wanted = None if symbols is None else {self._client.market(s)["symbol"] for s in symbols}
            for _ in range(_MAX_PAGES):
                params = {"settleCoin": settle_coin, "limit": _POSITIONS_PER_REQUEST}
                if cursor:
                    params["cursor"] = cursor
                page = self._client.fetch_positions(None, params)
                rows.extend(page)
                cursor = next_cursor(page)
                if not page or not cursor:
                    break
        states = [position_state(row) for row in rows]
        return sorted((p for p in states if p.qty and (wanted is None or p.symbol in wanted)), key=lambda p: p.symbol)

    def balance(self, coin: str = "USDT") -> BalanceState:
        """Equity, wallet balance and available margin of one coin of the unified account (zeros if absent)."""
        with _mapped():
            raw = self._client.fetch_balance({"coin": coin})
        info = raw.get("info") or {}
        for account in (info.get("result") or {}).get("list") or []:
            for entry in account.get("coin") or []:
                if entry.get("coin") != coin:
                    continue
                wallet = first_decimal(entry.get("walletBalance")) or Decimal(0)
                upnl = first_decimal(entry.get("unrealisedPnl")) or Decimal(0)
                equity = first_decimal(entry.get("equity")) or wallet + upnl
                used = sum(
                    (first_decimal(entry.get(key)) or Decimal(0) for key in ("totalPositionIM", "totalOrderIM",
                                                                                "locked")),
                    Decimal(0),
                )  # fmt: skip
                return BalanceState(coin, equity, wallet, equity - used, upnl)
        unified = raw.get(coin) or {}
        total = first_decimal(unified.get("total")) or Decimal(0)
        free = first_decimal(unified.get("free"))
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
        with _mapped():
            self._ensure_markets()
            start = since_ms
            while start <= until_ms:
                end = min(start + _EXECUTION_WINDOW_MS, until_ms)
                for row in self._funding_rows(start, end):
                    info = row.get("info") or {}
                    symbol = self._funding_symbol(row, settle_coin)
                    if symbol is None:
                        continue
                    payment = funding_state(row, symbol)
                    if payment is None or not since_ms <= payment.time_ms <= until_ms:
                        continue
                    seq = first_decimal(info.get("seq"))
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
            cursor = next_cursor(page)
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
