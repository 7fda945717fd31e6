"""The paper exchange: a simulated exchange for paper accounts, kept in the database (PaperAccount, PaperPosition,
PaperOrder, PaperFill, PaperFunding), with the semantics of CcxtExchange on Bybit v5 linear perpetuals.

What it simulates:
- market orders only; they fill at once and completely at the market's fill quote (``MarketView.fill_quotes``, the
  execution model of ``pairs.quant.fills``: the open of the bar after the newest closed one, ``execution_delay_bars``
  later; live, where that bar is still forming, the newest close) moved by the slippage against the taker (up for
  a buy, down for a sell): ``slippage`` fixed plus the model's variable part (range or volume share of the bar
  closed at the fill), paying ``fee_rate`` of the fill's notional from the wallet;
- one net position per symbol (one-way mode), signed, at an average entry price; reducing realises PnL into the
  wallet, crossing zero realises the closed part and opens the rest at the fill price;
- reduce-only orders that would open or increase a position are refused; a larger one is cut to the position;
- an opening order needs its initial margin (notional at the market's price / account leverage) plus its fee available;
- funding, settled lazily (see ``_settle_funding``).

Symbols are the exchange's own ids (BTCUSDT), as ``symbol_for`` answers. Time is the clock's only, so the same
class serves live paper trading (wall clock, newest candle close) and a replay (bar time, bar close).
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from core.clock import Clock
from core.formatting import plain as _plain
from exchanges.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    PermanentExchangeError,
    ReduceOnlyRejected,
    TemporaryExchangeError,
)
from exchanges.types import (
    FILLED,
    AccountSetup,
    BalanceState,
    FillState,
    FundingState,
    OrderAck,
    OrderState,
    PositionState,
)
from exchanges.validation import check_leverage, check_order_arguments
from execution.models import ExchangeAccount, PaperAccount, PaperFill, PaperFunding, PaperOrder, PaperPosition
from execution.paper.base import SETTLE_COIN, PaperBase, save_fields
from execution.paper.book import (
    FILL_ID_PREFIX,
    clean,
    from_ms,
    ms,
    net_fill,
    order_id,
    order_pk,
    read_then_write,
    stored,
)
from execution.paper.funding import StoredFundingRates
from pairs.market import MarketView
from pairs.models import Instrument, StrategyConfig
from pairs.services.evidence import costs

logger = logging.getLogger(__name__)

_RAW_STATUS = {FILLED: "Filled"}


class PaperExchange(PaperBase):
    """TradingExchange of a paper account (ExchangeAccount.mode == "paper"), simulated in the database.

    Prices come from ``market`` (``pairs.market.MarketView``: marks are the newest closed bar's close as of its
    clock, fills its ``fill_quotes``), time from ``clock`` (the market's by default). Every state change
    (place_order, and the funding that balance, positions and funding_payments settle first) runs in one
    transaction holding the account's row locks (ExchangeAccount, then PaperAccount), so two processes never interleave
    on one account.
    """
    # ------------------------------------------------------------------------------------------------ TradingExchange

    def prepare_account(self, symbols: list[str], *, leverage: Decimal | int) -> AccountSetup:
        """Nothing to change: paper positions are always one-way and margined at the account's leverage. Creates the
        paper wallet if it doesn't exist yet."""
        leverage = check_leverage(leverage)
        now = self._clock()
        read_then_write(lambda: self._locked_account(now), lambda read: self._write(read[0], None))
        return AccountSetup(position_mode="one_way", position_mode_changed=False, leverage=leverage,
                            leverage_changed=())  # fmt: skip

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
        """Place and fill a market order, idempotently per ``client_order_id``, like CcxtExchange.place_order.

        Nothing is rounded: a qty off the instrument's step, below its minimum quantity, above its maximum or (unless
        reduce-only) below its minimum notional raises InvalidOrder. A client id already used on this account returns
        that order with ``existing=True`` (DuplicateClientOrderId if it is on another symbol, side or reduce-only
        flag). A new order returns ``existing=False`` with its state and its fill (order_by_client_id and fills_of
        answer the same). Refused orders (InvalidOrder, InsufficientFunds, no price: TemporaryExchangeError) write
        nothing.
        """
        check_order_arguments(side=side, order_type=order_type, client_order_id=client_order_id, qty=qty,
                              price=price)
        if order_type == "limit":
            raise NotSupported("the paper exchange fills market orders only")
        instrument = self._instrument(symbol)
        if instrument is None:
            raise PermanentExchangeError(f"paper exchange: {self.account.exchange} has no instrument {symbol!r}")
        self._check_qty(instrument, qty)

        marks: dict[str, Decimal | None] = {}
        now = self._clock()
        return read_then_write(
            lambda: self._order_read(now, marks, instrument, symbol, side, qty, client_order_id, reduce_only),
            lambda read: self._order_write(now, client_order_id, symbol, side, reduce_only, *read),
        )

    def _order_read(
        self, now: datetime, marks: dict[str, Decimal | None], instrument: Instrument, symbol: str, side: str,
        qty: Decimal, client_order_id: str, reduce_only: bool,
    ) -> tuple[PaperAccount, list[PaperFunding] | None, OrderAck | ExchangeError | tuple]:
        """Everything place_order decides before it writes, under the account's locks: the wallet, the funding due
        (``_settle_funding``) and the outcome: the answer to a retry (the order placed before), the refusal, or the
        fill (``_fill_or_refusal``)."""
        # The symbol's row (even at zero) and every open position (funding, the margin check), locked.
        paper, rows = self._locked_account(now, symbol=symbol)
        funding = self._settle_funding(paper, now, marks, [row for row in rows if row.qty != 0])
        existing = PaperOrder.objects.filter(account=self.account, client_order_id=client_order_id).first()
        if existing is not None:
            return paper, funding, self._existing(existing, symbol, side, reduce_only)
        return paper, funding, self._fill_or_refusal(paper, rows, marks, instrument, symbol, side, qty, reduce_only)

    def _order_write(
        self, now: datetime, client_order_id: str, symbol: str, side: str, reduce_only: bool, paper: PaperAccount,
        funding: list[PaperFunding] | None, outcome: OrderAck | ExchangeError | tuple,
    ) -> OrderAck | ExchangeError:
        """Write what ``_order_read`` decided: nothing for a refusal (handed back, to be raised), the funding due for
        a retry, the fill otherwise (the wallet with the funding and the fill in one write)."""
        if isinstance(outcome, ExchangeError):
            return outcome
        if isinstance(outcome, OrderAck):
            self._write(paper, funding)  # a retry: the order placed before, and the funding due
            return outcome
        position, qty, fill_price, fee, realised, filled_at = outcome
        if position.pk is None:
            position.save()
        else:
            save_fields(position, ["qty", "avg_price"])
        paper.wallet_balance = stored(paper.wallet_balance + realised - fee)
        if paper.funding_settled_until is None or paper.funding_settled_until < now:
            paper.funding_settled_until = now  # the position changes now: funding up to now is settled
        self._write(paper, funding or [])
        order = PaperOrder.objects.create(
            account=self.account, client_order_id=client_order_id, symbol=symbol, side=side, order_type="market",
            qty=qty, filled_qty=qty, avg_price=fill_price, fee=fee, status=FILLED, reduce_only=bool(reduce_only),
            created_at=now,
        )  # fmt: skip
        # A fill with a delay happens at the later bar's open (the execution model): stamped then, booked now.
        fill = PaperFill.objects.create(order=order, qty=qty, price=fill_price, fee=fee, filled_at=filled_at or now)
        logger.info("paper %s: %s %s %s at %s (fee %s)", self.account.name, side, _plain(qty), symbol,
                    _plain(fill_price), _plain(fee))  # fmt: skip
        # The order is final and its one fill known: both come with the acknowledgment, so a bot needs no read.
        return OrderAck(exchange_order_id=order_id(order.pk), client_order_id=client_order_id, symbol=symbol,
                        state=self._order_state(order), fills=(self._fill_state(fill, order),))  # fmt: skip

    def _fill_or_refusal(
        self, paper: PaperAccount, rows: list[PaperPosition], marks: dict[str, Decimal | None], instrument: Instrument,
        symbol: str, side: str, qty: Decimal, reduce_only: bool,
    ) -> tuple[PaperPosition, Decimal, Decimal, Decimal, Decimal, datetime | None] | ExchangeError:
        """The market order's fill against the locked wallet and positions: (the position, changed in memory, the
        filled qty, fill price, fee, realised PnL, the fill time if not the clock's), or the error that refuses the
        order. Writes nothing."""
        try:
            fill_base, slippage, filled_at = self._fill_quote(symbol)
        except TemporaryExchangeError as exc:
            return exc
        if not reduce_only and instrument.min_notional is not None and qty * fill_base < instrument.min_notional:
            return InvalidOrder(
                f"order value {_plain(qty * fill_base)} of {symbol} ({_plain(qty)} x {_plain(fill_base)}) is "
                f"below its minimum notional {_plain(instrument.min_notional)}"
            )
        position = next((row for row in rows if row.symbol == symbol), None)
        held = position.qty if position is not None else Decimal(0)
        if reduce_only:
            qty = _reduce_only_qty(symbol, side, qty, held)
            if isinstance(qty, ExchangeError):
                return qty
        signed = qty if side == "buy" else -qty
        fill_price = stored(fill_base * (1 + slippage) if side == "buy" else fill_base * (1 - slippage))
        fee = stored(qty * fill_price * self.fee_rate)
        opening = qty if held == 0 or (held > 0) == (signed > 0) else max(Decimal(0), qty - abs(held))
        if opening > 0:
            refusal = self._margin_refusal(paper, rows, marks, symbol, side, qty, opening * fill_base, fee)
            if refusal is not None:
                return refusal
        new_qty, new_avg, realised = net_fill(held, position.avg_price if position else Decimal(0), signed, fill_price)
        if position is None:
            position = PaperPosition(account=self.account, symbol=symbol)
        position.qty = stored(new_qty)
        position.avg_price = stored(new_avg)
        return position, qty, fill_price, fee, realised, filled_at

    def _margin_refusal(self, paper: PaperAccount, rows: list[PaperPosition], marks: dict[str, Decimal | None],
                        symbol: str, side: str, qty: Decimal, opening_notional: Decimal, fee: Decimal
                        ) -> InsufficientFunds | None:
        """The refusal of an order whose opening part needs more initial margin (plus its fee) than is available."""
        positions = [row for row in rows if row.qty != 0]
        unrealised, margin = self._margin_view(positions, marks, self._settle_of(symbol))
        available = paper.wallet_balance + unrealised - margin
        required = opening_notional / self.account.leverage + fee
        if required <= available:
            return None
        return InsufficientFunds(
            f"paper exchange: {side} {_plain(qty)} {symbol} needs {_plain(required)} "
            f"(margin at leverage {_plain(self.account.leverage)} plus fee), available {_plain(available)}"
        )

    @staticmethod
    def _check_qty(instrument: Instrument, qty: Decimal) -> None:
        symbol = instrument.symbol
        step = instrument.qty_step
        if step is not None and step > 0 and qty % step != 0:
            raise InvalidOrder(
                f"qty {_plain(qty)} of {symbol} is not a multiple of its step {_plain(step)}: round it before "
                "placing the order"
            )
        if instrument.min_qty is not None and qty < instrument.min_qty:
            raise InvalidOrder(f"qty {_plain(qty)} of {symbol} is below its minimum {_plain(instrument.min_qty)}")
        if instrument.max_qty is not None and qty > instrument.max_qty:
            raise InvalidOrder(f"qty {_plain(qty)} of {symbol} is above its maximum {_plain(instrument.max_qty)}")

    def _existing(self, order: PaperOrder, symbol: str, side: str, reduce_only: bool
                  ) -> OrderAck | DuplicateClientOrderId:
        """The answer to a create whose client id is taken: the order, if it is the same one (a retry); else the error
        to raise."""
        if order.symbol != symbol or order.side != side or order.reduce_only != bool(reduce_only):
            return DuplicateClientOrderId(
                f"client order id {order.client_order_id} on {symbol} is taken by a different order "
                f"({order.symbol}, {order.side}, reduce_only={order.reduce_only}, qty {_plain(order.qty)})"
            )
        state = self._order_state(order)
        logger.info("paper order %s on %s already existed (%s): not placed again", order.client_order_id, symbol,
                    state.status)  # fmt: skip
        return OrderAck(state.exchange_order_id, order.client_order_id, symbol, existing=True, state=state)

    def _order_state(self, order: PaperOrder) -> OrderState:
        created_ms = ms(order.created_at)
        return OrderState(
            exchange_order_id=order_id(order.pk),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            status=order.status,
            is_open=False,  # market orders fill completely at once
            qty=clean(order.qty),
            filled_qty=clean(order.filled_qty),
            avg_price=clean(order.avg_price) if order.filled_qty else None,
            fee=clean(order.fee),
            fee_currency=self._settle_of(order.symbol),
            reduce_only=order.reduce_only,
            limit_price=None,
            raw_status=_RAW_STATUS.get(order.status, order.status),
            created_ms=created_ms,
            updated_ms=created_ms,
        )

    def order_by_client_id(self, symbol: str, client_order_id: str, *, since_ms: int | None = None
                           ) -> OrderState | None:
        """The order with this client id on ``symbol``, or None (``since_ms`` needs no use here: every order is
        kept)."""
        order = PaperOrder.objects.filter(account=self.account, symbol=symbol, client_order_id=client_order_id).first()
        return None if order is None else self._order_state(order)

    def fills_of(
        self,
        symbol: str,
        client_order_id: str | None = None,
        *,
        exchange_order_id: str | None = None,
        since_ms: int | None = None,
    ) -> list[FillState]:
        """The fills of one order, oldest first; give its client id or its exchange id ("paper-order-<pk>")."""
        if (client_order_id is None) == (exchange_order_id is None):
            raise ValueError("give exactly one of client_order_id and exchange_order_id")
        fills = PaperFill.objects.filter(order__account=self.account, order__symbol=symbol).select_related("order")
        if client_order_id is not None:
            fills = fills.filter(order__client_order_id=client_order_id)
        else:
            pk = order_pk(exchange_order_id)
            if pk is None:
                return []
            fills = fills.filter(order_id=pk)
        if since_ms is not None:
            fills = fills.filter(filled_at__gte=from_ms(since_ms))
        return [self._fill_state(fill, fill.order) for fill in fills.order_by("filled_at", "pk")]

    def _fill_state(self, fill: PaperFill, order: PaperOrder) -> FillState:
        return FillState(
            exec_id=f"{FILL_ID_PREFIX}{fill.pk}",
            exchange_order_id=order_id(order.pk),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=clean(fill.qty),
            price=clean(fill.price),
            fee=clean(fill.fee),
            fee_currency=self._settle_of(order.symbol),
            is_maker=False,
            time_ms=ms(fill.filled_at),
        )

    def executions(self, symbol: str, *, since_ms: int) -> list[FillState]:
        """Every fill on ``symbol`` since ``since_ms``, oldest first (on paper, only the bot trades)."""
        fills = (PaperFill.objects.filter(order__account=self.account, order__symbol=symbol,
                                          filled_at__gte=from_ms(since_ms))
                 .select_related("order").order_by("filled_at", "pk"))
        return [self._fill_state(fill, fill.order) for fill in fills]

    def cancel(self, symbol: str, client_order_id: str) -> OrderState:
        """Market orders are final when placed: the order's state as it is; OrderNotFound if there is none."""
        state = self.order_by_client_id(symbol, client_order_id)
        if state is None:
            raise OrderNotFound(f"paper exchange: no order {client_order_id} on {symbol}")
        return state

    def open_orders(self, *, settle_coin: str = SETTLE_COIN) -> list[OrderState]:
        """Nothing ever works here: a paper market order fills (or is refused) when placed."""
        return []

    def positions(self, symbols: list[str] | None = None, *, settle_coin: str = SETTLE_COIN) -> list[PositionState]:
        """Open (non-zero) positions settled in ``settle_coin``, all or those of ``symbols``, by symbol; funding due is
        settled first. mark_price is the market's price (None if unknown, and then unrealised PnL 0)."""
        _, positions, marks = self._settled()
        wanted = None if symbols is None else set(symbols)
        self._marks_load(
            [
                p.symbol
                for p in positions
                if (wanted is None or p.symbol in wanted) and self._settle_of(p.symbol) == settle_coin
            ],
            marks,
        )
        states = []
        for position in positions:
            if wanted is not None and position.symbol not in wanted:
                continue
            if self._settle_of(position.symbol) != settle_coin:
                continue
            mark = self._mark(position.symbol, marks)
            unrealised = Decimal(0) if mark is None else stored(position.qty * (mark - position.avg_price))
            states.append(
                PositionState(
                    symbol=position.symbol, qty=clean(position.qty), avg_price=clean(position.avg_price),
                    mark_price=clean(mark), unrealised_pnl=clean(unrealised), leverage=clean(self.account.leverage),
                )
            )  # fmt: skip
        return states

    def balance(self, coin: str = SETTLE_COIN) -> BalanceState:
        """wallet (capital + realised PnL - fees + funding), equity = wallet + unrealised PnL at the market's prices,
        available = equity - sum(|qty| x mark) / leverage; zeros for a coin the paper wallet doesn't hold."""
        paper, positions, marks = self._settled()
        if coin != self.settle_coin:
            return BalanceState(coin, Decimal(0), Decimal(0), Decimal(0), Decimal(0))
        unrealised, margin = self._margin_view(positions, marks, coin)
        unrealised = stored(unrealised)
        equity = paper.wallet_balance + unrealised
        available = stored(equity - margin)
        return BalanceState(coin, clean(equity), clean(paper.wallet_balance), clean(available), clean(unrealised))

    def funding_payments(self, *, since_ms: int, until_ms: int, settle_coin: str = SETTLE_COIN) -> list[FundingState]:
        """Funding settled on positions with since_ms <= time <= until_ms, oldest first (funding due is settled
        first)."""
        self._settled()
        rows = PaperFunding.objects.filter(
            account=self.account, settled_at__gte=from_ms(since_ms), settled_at__lte=from_ms(until_ms)
        ).order_by("settled_at", "symbol")
        rows = list(rows)
        self._instruments_load(row.symbol for row in rows)
        return [
            FundingState(
                symbol=row.symbol,
                time_ms=ms(row.settled_at),
                rate=clean(row.rate),
                position_qty=clean(row.position_qty),
                mark_price=clean(row.mark_price),
                amount=clean(row.amount),
            )
            for row in rows
            if self._settle_of(row.symbol) == settle_coin
        ]


def paper_exchange_for(account: ExchangeAccount, *, market: MarketView, config: StrategyConfig,
                       clock: Clock | None = None) -> PaperExchange:
    """The PaperExchange of ``account``, priced by ``market`` at ``clock`` (the market's clock by default), with the
    strategy configuration's taker fee, slippage and default funding rate (the costs the backtest charges); stored
    funding rates first."""
    return PaperExchange(
        account,
        market=market,
        clock=clock,
        fee_rate=Decimal(str(config.taker_fee)),
        slippage=Decimal(str(config.slippage)),
        slippage_model=costs(config).slippage_rule(),
        execution_delay_bars=config.execution_delay_bars,
        funding_rate_of=StoredFundingRates(
            exchange=account.exchange, default=Decimal(str(config.default_funding_rate))
        ),
    )


def _reduce_only_qty(symbol: str, side: str, qty: Decimal, held: Decimal) -> Decimal | ReduceOnlyRejected:
    """What a reduce-only order fills against a position of ``held``: refused when there is nothing to reduce or it
    would increase the position; cut to the position when larger (Bybit cuts a reduce-only market order)."""
    signed = qty if side == "buy" else -qty
    if held == 0:
        return ReduceOnlyRejected(f"reduce-only {side} of {symbol}: there is no position to reduce")
    if (held > 0) == (signed > 0):
        return ReduceOnlyRejected(f"reduce-only {side} of {symbol} would increase the position of {_plain(held)}")
    return min(qty, abs(held))


