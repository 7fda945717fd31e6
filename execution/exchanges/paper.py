"""The paper exchange: a simulated exchange for paper accounts, kept in the database (PaperAccount, PaperPosition,
PaperOrder, PaperFill, PaperFunding), with the semantics of CcxtExchange on Bybit v5 linear perpetuals.

What it simulates:
- market orders only; they fill at once and completely at ``price_of(symbol)`` moved by ``slippage`` against the
  taker (up for a buy, down for a sell), paying ``fee_rate`` of the fill's notional from the wallet;
- one net position per symbol (one-way mode), signed, at an average entry price; reducing realises PnL into the
  wallet, crossing zero realises the closed part and opens the rest at the fill price;
- reduce-only orders that would open or increase a position are refused; a larger one is cut to the position;
- an opening order needs its initial margin (notional at ``price_of`` / account leverage) plus its fee available;
- funding, settled lazily (see ``_settle_funding``).

Symbols are the exchange's own ids (BTCUSDT), as ``symbol_for`` answers. The clock is ``now()`` only, so the same
class serves live paper trading (wall clock, newest candle close) and a replay (bar time, bar close).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import TypeVar

from django.db import DatabaseError, transaction
from django.db.models import FilteredRelation, Q

from execution.exchanges.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from execution.exchanges.types import (
    FILLED,
    AccountSetup,
    BalanceState,
    FillState,
    FundingState,
    OrderAck,
    OrderState,
    PositionState,
)
from execution.models import ExchangeAccount, PaperAccount, PaperFill, PaperFunding, PaperOrder, PaperPosition
from pairs.marketdata.funding import (
    FUNDING_GRID_MINUTES,
    funding_interval_minutes,
    settlement_times,
    settles_between,
)
from pairs.models import FundingRate, Instrument, SelectionConfig
from statarb_site.db import DECIMAL_PLACES

logger = logging.getLogger(__name__)
_R = TypeVar("_R")
_A = TypeVar("_A")

SETTLE_COIN = "USDT"
# Bybit orderLinkId: at most 36 characters of letters, digits, dashes and underscores (as in CcxtExchange).
_CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_ORDER_SIDES = ("buy", "sell")
_ORDER_TYPES = ("market", "limit")
_ORDER_ID_PREFIX = "paper-order-"
_FILL_ID_PREFIX = "paper-"
_RAW_STATUS = {FILLED: "Filled"}
_STORED = Decimal(1).scaleb(-DECIMAL_PLACES)  # the columns' 12 decimal places
_WIDE = Context(prec=40)  # quantizing 32-digit column values needs more than the default 28 digits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _stored(value: Decimal) -> Decimal:
    """``value`` as its Decimal(32,12) column keeps it, so the computation goes on with what the database holds."""
    return value.quantize(_STORED, context=_WIDE)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def _clean(value: Decimal | None) -> Decimal | None:
    """A column value without the 12-place padding ("0.010000000000" -> "0.01", "50000.000000000000" -> "50000"),
    as the exchange writes numbers, so answers read the same as CcxtExchange's."""
    if value is None:
        return None
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "") else text


def stored_funding_rate(symbol: str, time: datetime, *, exchange: str, default: Decimal | None = None) -> Decimal:
    """The funding rate of ``symbol`` settled at ``time``: the stored pairs FundingRate, else ``default``, else
    SelectionConfig.current().default_funding_rate."""
    rate = (
        FundingRate.objects.filter(instrument__exchange=exchange, instrument__symbol=symbol, funding_time=time)
        .values_list("rate", flat=True)
        .first()
    )
    if rate is not None:
        return rate
    if default is None:
        default = Decimal(str(SelectionConfig.current().default_funding_rate))
    return default


class StoredFundingRates:
    """``stored_funding_rate`` as the paper exchange's ``funding_rate_of``, plus ``many``: the rates of many
    (symbol, time) settlements in one query, for a settlement of every open position at once."""

    def __init__(self, *, exchange: str, default: Decimal | None = None):
        self.exchange = exchange
        self.default = default

    def __call__(self, symbol: str, time: datetime) -> Decimal:
        return stored_funding_rate(symbol, time, exchange=self.exchange, default=self.default)

    def many(self, keys: Iterable[tuple[str, datetime]]) -> dict[tuple[str, datetime], Decimal]:
        keys = set(keys)
        if not keys:
            return {}
        stored = {
            (symbol, time): rate
            for symbol, time, rate in FundingRate.objects.filter(
                instrument__exchange=self.exchange, instrument__symbol__in={s for s, _ in keys},
                funding_time__in={t for _, t in keys},
            ).values_list("instrument__symbol", "funding_time", "rate")
        }  # fmt: skip
        default = self.default
        if default is None and len(stored.keys() & keys) < len(keys):
            default = Decimal(str(SelectionConfig.current().default_funding_rate))
        return {key: stored.get(key, default) for key in keys}


class PaperExchange:
    """TradingExchange of a paper account (ExchangeAccount.mode == "paper"), simulated in the database.

    ``price_of(symbol)`` is the latest price (the newest candle close; in a replay the current bar's close), None
    when unknown; ``now()`` is the clock (aware datetimes; the bar time in a replay). Every state change
    (place_order, and the funding that balance, positions and funding_payments settle first) runs in one
    transaction holding the account's row locks (ExchangeAccount, then PaperAccount), so two processes never interleave
    on one account.
    """

    def __init__(
        self,
        account: ExchangeAccount,
        *,
        price_of: Callable[[str], Decimal | None],
        now: Callable[[], datetime],
        fee_rate: Decimal,
        slippage: Decimal,
        funding_rate_of: Callable[[str, datetime], Decimal] | None = None,
        settle_coin: str = SETTLE_COIN,
    ):
        if account.mode != ExchangeAccount.Mode.PAPER:
            raise NotSupported(f"Account {account.name!r} is in {account.mode!r} mode: it trades on the exchange.")
        for name, value in (("fee_rate", fee_rate), ("slippage", slippage)):
            if not isinstance(value, Decimal) or not value.is_finite() or not 0 <= value < 1:
                raise ValueError(f"{name} must be a Decimal fraction in [0, 1), got {value!r}")
        self.account = account
        self.fee_rate = fee_rate
        self.slippage = slippage
        self.settle_coin = settle_coin
        self._price_of = price_of
        self._now = now
        self._funding_rate_of = funding_rate_of or StoredFundingRates(exchange=account.exchange)
        self._instruments: dict[str, Instrument | None] = {}

    # ------------------------------------------------------------------------------------------------ lookups

    def symbol_for(self, instrument: Instrument) -> str:
        return instrument.symbol

    def _instrument(self, symbol: str) -> Instrument | None:
        if symbol not in self._instruments:
            self._instruments[symbol] = Instrument.objects.filter(exchange=self.account.exchange, symbol=symbol).first()
        return self._instruments[symbol]

    def _instruments_load(self, symbols: Iterable[str]) -> None:
        """Look up, in one query, the instruments of ``symbols`` that ``_instrument`` has not cached yet."""
        missing = {symbol for symbol in symbols if symbol not in self._instruments}
        if missing:
            found = {i.symbol: i for i in Instrument.objects.filter(exchange=self.account.exchange, symbol__in=missing)}
            self._instruments.update({symbol: found.get(symbol) for symbol in missing})

    def _marks_load(self, symbols: Iterable[str], marks: dict[str, Decimal | None]) -> None:
        """Let ``price_of`` fetch the prices of ``symbols`` at once when it can (``price_of.prefetch``, as
        SymbolPrices has: one feed query), before ``_mark`` asks for them one by one."""
        prefetch = getattr(self._price_of, "prefetch", None)
        missing = [symbol for symbol in symbols if symbol not in marks]
        if prefetch is not None and missing:
            prefetch(missing)

    def _settle_of(self, symbol: str) -> str:
        instrument = self._instrument(symbol)
        if instrument is None:
            return self.settle_coin
        return instrument.settle or instrument.quote or self.settle_coin

    def _clock(self) -> datetime:
        moment = self._now()
        if moment.tzinfo is None:
            raise ValueError(f"the paper exchange's clock must give aware datetimes, got {moment!r}")
        return moment

    def _price(self, symbol: str) -> Decimal:
        price = self._price_of(symbol)
        if price is None:
            raise TemporaryExchangeError(f"paper exchange: no price for {symbol} yet")
        if not isinstance(price, Decimal):
            price = Decimal(str(price))
        if not price.is_finite() or price <= 0:
            raise TemporaryExchangeError(f"paper exchange: the price of {symbol} is {price}, not a positive number")
        return price

    def _mark(self, symbol: str, marks: dict[str, Decimal | None]) -> Decimal | None:
        """The price of ``symbol`` (None if unknown), asked once per operation."""
        if symbol not in marks:
            price = self._price_of(symbol)
            if price is not None and not isinstance(price, Decimal):
                price = Decimal(str(price))
            marks[symbol] = price if price is not None and price.is_finite() and price > 0 else None
        return marks[symbol]

    # ------------------------------------------------------------------------------------------------ the account

    def _locked_account(self, now: datetime, *, symbol: str | None = None
                        ) -> tuple[PaperAccount, list[PaperPosition]]:
        """The PaperAccount and its open positions (with ``symbol``'s row even at zero), by symbol, their rows locked
        until the transaction ends: one statement, which locks the ExchangeAccount row too. Call inside
        transaction.atomic. A wallet that doesn't exist yet comes back unsaved (no primary key), with the account's
        capital and no funding due for the past: the caller saves it with its first write (``_write``), so a refused
        order writes nothing at all.

        The ExchangeAccount row is locked first, always, and every paper write happens under that lock: every insert
        of a paper row takes a shared lock on it (the foreign key check, InnoDB), so a process holding the wallet's
        lock while waiting for the account's could deadlock with one holding the account's; with one lock order
        (ExchangeAccount, then the paper rows) calls simply queue. The statement reads the account row by its primary
        key and the wallet row by its unique key before the positions, so it takes the locks in that order
        (``test_the_account_row_is_locked_before_its_wallet`` checks it on MariaDB).
        """
        held = ~Q(paper_positions__qty=0)
        if symbol is not None:
            held |= Q(paper_positions__symbol=symbol)
        rows = list(
            ExchangeAccount.objects.select_for_update().filter(pk=self.account.pk)
            .annotate(held=FilteredRelation("paper_positions", condition=held))
            .order_by("held__symbol")
            .values_list("paper__id", "paper__wallet_balance", "paper__funding_settled_until", "held__id",
                         "held__symbol", "held__qty", "held__avg_price")
        )  # fmt: skip
        if not rows:
            raise PermanentExchangeError(f"paper exchange: account {self.account.name!r} no longer exists")
        paper_id, wallet_balance, settled_until = rows[0][:3]
        if paper_id is None:
            paper = PaperAccount(account=self.account, wallet_balance=_stored(self.account.capital),
                                 funding_settled_until=now)  # fmt: skip
        else:
            paper = PaperAccount(id=paper_id, account=self.account, wallet_balance=wallet_balance,
                                 funding_settled_until=settled_until)  # fmt: skip
            paper._state.adding = False
        positions = []
        for *_, position_id, position_symbol, qty, avg_price in rows:
            if position_id is not None:
                position = PaperPosition(id=position_id, account=self.account, symbol=position_symbol, qty=qty,
                                         avg_price=avg_price)  # fmt: skip
                position._state.adding = False
                positions.append(position)
        return paper, positions

    @staticmethod
    def _write(paper: PaperAccount, funding: list[PaperFunding] | None) -> None:
        """Store the wallet (created if new) and the funding settlements ``_settle_funding`` computed (None: the
        wallet didn't change)."""
        if paper.pk is None:
            paper.save()
        elif funding is not None:
            paper.save(update_fields=["wallet_balance", "funding_settled_until"])
        if funding:
            PaperFunding.objects.bulk_create(funding)

    def _settle_funding(
        self, paper: PaperAccount, now: datetime, marks: dict[str, Decimal | None], positions: list[PaperPosition]
    ) -> list[PaperFunding] | None:
        """Settle every funding time t with funding_settled_until < t <= now on each of ``positions`` (the account's
        open positions, read by the caller under the account's locks), in ``paper``. Nothing is written here: returns
        None when ``paper`` is unchanged, else the PaperFunding rows to insert (perhaps none), and the caller writes
        both (``_write``).

        Positions change only inside place_order, which settles first and always moves the watermark to its time, so
        the position at each such t is the current one. Each t is judged with the funding intervals known at the first
        call after it, as the watermark then passes it (an instrument's interval can change: Bybit moves capped symbols
        from 8 h to 1 h). Between two whole hours no instrument settles (``FUNDING_GRID_MINUTES``), so a call that
        passes no whole hour leaves the watermark where it is and, reading, writes nothing. The price at t
        is not known lazily: the mark is ``price_of`` now (the position's entry price when there is none), a
        simplification whose lag is at most one bar in a replay (the engine calls the exchange every bar). A
        PaperFunding row is unique per (account, symbol, time): a settlement is never paid twice.
        """
        since = paper.funding_settled_until
        if since is not None and now <= since:
            return None
        changed = since is None or settles_between(since, now, FUNDING_GRID_MINUTES)
        rows: list[PaperFunding] = []
        if since is not None:
            self._instruments_load(p.symbol for p in positions)
            due = []  # (position, settlement time), by symbol then time
            for position in positions:
                instrument = self._instrument(position.symbol)
                interval = funding_interval_minutes(instrument.funding_interval_minutes if instrument else None)
                due.extend((position, time) for time in settlement_times(since, now, interval))
            if due:
                changed = True
                # Paid already (a settlement is never paid twice): the rows are written under the account's locks.
                paid = set(
                    PaperFunding.objects.filter(
                        account=self.account, settled_at__gt=since, settled_at__lte=now
                    ).values_list("symbol", "settled_at")
                )
                due = [(position, time) for position, time in due if (position.symbol, time) not in paid]
                self._marks_load([p.symbol for p in positions], marks)
                rates = self._funding_rates([(position.symbol, time) for position, time in due])
                for position, time in due:
                    mark = self._mark(position.symbol, marks) or position.avg_price
                    rate = rates[position.symbol, time]
                    rate = _stored(rate if isinstance(rate, Decimal) else Decimal(str(rate)))
                    amount = _stored(-position.qty * mark * rate)  # longs pay a positive rate
                    rows.append(
                        PaperFunding(
                            account=self.account,
                            symbol=position.symbol,
                            settled_at=time,
                            rate=rate,
                            position_qty=position.qty,
                            mark_price=_stored(mark),
                            amount=amount,
                        )
                    )
                    paper.wallet_balance = _stored(paper.wallet_balance + amount)
        if not changed:
            return None
        paper.funding_settled_until = now
        return rows

    def _funding_rates(self, keys: list[tuple[str, datetime]]) -> dict[tuple[str, datetime], Decimal]:
        """``funding_rate_of`` for every (symbol, time) of ``keys``; in one go when it can (``funding_rate_of.many``,
        as StoredFundingRates has: one query)."""
        many = getattr(self._funding_rate_of, "many", None)
        if many is not None:
            return many(keys)
        return {key: self._funding_rate_of(*key) for key in keys}

    def _settled(self) -> tuple[PaperAccount, list[PaperPosition], dict[str, Decimal | None]]:
        """Settle funding due up to now (in its own transaction) and return the account, its open positions and
        the prices asked for on the way."""
        marks: dict[str, Decimal | None] = {}
        now = self._clock()

        def write(read: tuple[PaperAccount, list[PaperPosition], list[PaperFunding] | None]):
            paper, positions, funding = read
            self._write(paper, funding)
            return paper, positions

        paper, positions = _read_then_write(lambda: self._settlement_read(now, marks), write)
        self._instruments_load(p.symbol for p in positions)
        return paper, positions, marks

    def _settlement_read(self, now: datetime, marks: dict[str, Decimal | None]
                         ) -> tuple[PaperAccount, list[PaperPosition], list[PaperFunding] | None]:
        paper, positions = self._locked_account(now)
        return paper, positions, self._settle_funding(paper, now, marks, positions)

    def _margin_view(
        self, positions: Iterable[PaperPosition], marks: dict[str, Decimal | None], coin: str
    ) -> tuple[Decimal, Decimal]:
        """(unrealised PnL, initial margin) of the positions settled in ``coin``. A position without a price counts
        no unrealised PnL and its margin at the entry price."""
        unrealised = Decimal(0)
        notional = Decimal(0)
        positions = list(positions)
        self._instruments_load(p.symbol for p in positions)
        self._marks_load([p.symbol for p in positions if self._settle_of(p.symbol) == coin], marks)
        for position in positions:
            if self._settle_of(position.symbol) != coin:
                continue
            mark = self._mark(position.symbol, marks)
            if mark is not None:
                unrealised += position.qty * (mark - position.avg_price)
            notional += abs(position.qty) * (mark if mark is not None else position.avg_price)
        return unrealised, notional / self.account.leverage

    # ------------------------------------------------------------------------------------------------ TradingExchange

    def prepare_account(self, symbols: list[str], *, leverage: Decimal | int) -> AccountSetup:
        """Nothing to change: paper positions are always one-way and margined at the account's leverage. Creates the
        paper wallet if it doesn't exist yet."""
        leverage = Decimal(leverage)
        if not leverage.is_finite() or leverage <= 0:
            raise InvalidOrder(f"leverage must be a positive number, got {leverage}")
        now = self._clock()
        _read_then_write(lambda: self._locked_account(now), lambda read: self._write(read[0], None))
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
        if side not in _ORDER_SIDES:
            raise InvalidOrder(f"side must be 'buy' or 'sell', got {side!r}")
        if order_type not in _ORDER_TYPES:
            raise InvalidOrder(f"order_type must be 'market' or 'limit', got {order_type!r}")
        if not isinstance(client_order_id, str) or not _CLIENT_ORDER_ID.match(client_order_id):
            raise InvalidOrder(
                f"client order id {client_order_id!r} must be 1-36 letters, digits, '-' or '_' (Bybit orderLinkId)"
            )
        if not isinstance(qty, Decimal) or not qty.is_finite() or qty <= 0:
            raise InvalidOrder(f"qty must be a positive Decimal, got {qty!r}")
        if order_type == "limit":
            raise NotSupported("the paper exchange fills market orders only")
        if price is not None:
            raise InvalidOrder("a market order takes no price")
        instrument = self._instrument(symbol)
        if instrument is None:
            raise PermanentExchangeError(f"paper exchange: {self.account.exchange} has no instrument {symbol!r}")
        self._check_qty(instrument, qty)

        marks: dict[str, Decimal | None] = {}
        now = self._clock()
        return _read_then_write(
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
        position, qty, fill_price, fee, realised = outcome
        position.save()
        paper.wallet_balance = _stored(paper.wallet_balance + realised - fee)
        if paper.funding_settled_until is None or paper.funding_settled_until < now:
            paper.funding_settled_until = now  # the position changes now: funding up to now is settled
        self._write(paper, funding or [])
        order = PaperOrder.objects.create(
            account=self.account, client_order_id=client_order_id, symbol=symbol, side=side, order_type="market",
            qty=qty, filled_qty=qty, avg_price=fill_price, fee=fee, status=FILLED, reduce_only=bool(reduce_only),
            created_at=now,
        )  # fmt: skip
        fill = PaperFill.objects.create(order=order, qty=qty, price=fill_price, fee=fee, filled_at=now)
        logger.info("paper %s: %s %s %s at %s (fee %s)", self.account.name, side, _plain(qty), symbol,
                    _plain(fill_price), _plain(fee))  # fmt: skip
        # The order is final and its one fill known: both come with the acknowledgment, so a bot needs no read.
        return OrderAck(exchange_order_id=_order_id(order.pk), client_order_id=client_order_id, symbol=symbol,
                        state=self._order_state(order), fills=(self._fill_state(fill, order),))  # fmt: skip

    def _fill_or_refusal(
        self, paper: PaperAccount, rows: list[PaperPosition], marks: dict[str, Decimal | None], instrument: Instrument,
        symbol: str, side: str, qty: Decimal, reduce_only: bool,
    ) -> tuple[PaperPosition, Decimal, Decimal, Decimal, Decimal] | ExchangeError:
        """The market order's fill against the locked wallet and positions: (the position, changed in memory, the
        filled qty, fill price, fee, realised PnL), or the error that refuses the order. Writes nothing."""
        try:
            fill_base = self._price(symbol)
        except TemporaryExchangeError as exc:
            return exc
        marks[symbol] = fill_base
        if not reduce_only and instrument.min_notional is not None and qty * fill_base < instrument.min_notional:
            return InvalidOrder(
                f"order value {_plain(qty * fill_base)} of {symbol} ({_plain(qty)} x {_plain(fill_base)}) is "
                f"below its minimum notional {_plain(instrument.min_notional)}"
            )
        position = next((row for row in rows if row.symbol == symbol), None)
        held = position.qty if position is not None else Decimal(0)
        signed = qty if side == "buy" else -qty
        if reduce_only:
            if held == 0:
                return InvalidOrder(f"reduce-only {side} of {symbol}: there is no position to reduce")
            if (held > 0) == (signed > 0):
                return InvalidOrder(f"reduce-only {side} of {symbol} would increase the position of {_plain(held)}")
            if qty > abs(held):
                qty = abs(held)  # Bybit cuts a reduce-only market order to the position
                signed = qty if side == "buy" else -qty
        fill_price = _stored(fill_base * (1 + self.slippage) if side == "buy" else fill_base * (1 - self.slippage))
        fee = _stored(qty * fill_price * self.fee_rate)
        opening = qty if held == 0 or (held > 0) == (signed > 0) else max(Decimal(0), qty - abs(held))
        if opening > 0:
            positions = [row for row in rows if row.qty != 0]
            unrealised, margin = self._margin_view(positions, marks, self._settle_of(symbol))
            available = paper.wallet_balance + unrealised - margin
            required = opening * fill_base / self.account.leverage + fee
            if required > available:
                return InsufficientFunds(
                    f"paper exchange: {side} {_plain(qty)} {symbol} needs {_plain(required)} "
                    f"(margin at leverage {_plain(self.account.leverage)} plus fee), available {_plain(available)}"
                )
        new_qty, new_avg, realised = _net(held, position.avg_price if position else Decimal(0), signed, fill_price)
        if position is None:
            position = PaperPosition(account=self.account, symbol=symbol)
        position.qty = _stored(new_qty)
        position.avg_price = _stored(new_avg)
        return position, qty, fill_price, fee, realised

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
        created_ms = _ms(order.created_at)
        return OrderState(
            exchange_order_id=_order_id(order.pk),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            status=order.status,
            is_open=False,  # market orders fill completely at once
            qty=_clean(order.qty),
            filled_qty=_clean(order.filled_qty),
            avg_price=_clean(order.avg_price) if order.filled_qty else None,
            fee=_clean(order.fee),
            fee_currency=self._settle_of(order.symbol),
            reduce_only=order.reduce_only,
            limit_price=None,
            raw_status=_RAW_STATUS.get(order.status, order.status),
            created_ms=created_ms,
            updated_ms=created_ms,
        )

    def order_by_client_id(self, symbol: str, client_order_id: str) -> OrderState | None:
        """The order with this client id on ``symbol``, or None."""
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
            pk = _order_pk(exchange_order_id)
            if pk is None:
                return []
            fills = fills.filter(order_id=pk)
        if since_ms is not None:
            fills = fills.filter(filled_at__gte=_from_ms(since_ms))
        return [self._fill_state(fill, fill.order) for fill in fills.order_by("filled_at", "pk")]

    def _fill_state(self, fill: PaperFill, order: PaperOrder) -> FillState:
        return FillState(
            exec_id=f"{_FILL_ID_PREFIX}{fill.pk}",
            exchange_order_id=_order_id(order.pk),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=_clean(fill.qty),
            price=_clean(fill.price),
            fee=_clean(fill.fee),
            fee_currency=self._settle_of(order.symbol),
            is_maker=False,
            time_ms=_ms(fill.filled_at),
        )

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
        settled first. mark_price is ``price_of`` (None if unknown, and then unrealised PnL 0)."""
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
            unrealised = Decimal(0) if mark is None else _stored(position.qty * (mark - position.avg_price))
            states.append(
                PositionState(
                    symbol=position.symbol, qty=_clean(position.qty), avg_price=_clean(position.avg_price),
                    mark_price=_clean(mark), unrealised_pnl=_clean(unrealised), leverage=_clean(self.account.leverage),
                )
            )  # fmt: skip
        return states

    def balance(self, coin: str = SETTLE_COIN) -> BalanceState:
        """wallet (capital + realised PnL - fees + funding), equity = wallet + unrealised PnL at ``price_of``,
        available = equity - sum(|qty| x mark) / leverage; zeros for a coin the paper wallet doesn't hold."""
        paper, positions, marks = self._settled()
        if coin != self.settle_coin:
            return BalanceState(coin, Decimal(0), Decimal(0), Decimal(0), Decimal(0))
        unrealised, margin = self._margin_view(positions, marks, coin)
        unrealised = _stored(unrealised)
        equity = paper.wallet_balance + unrealised
        available = _stored(equity - margin)
        return BalanceState(coin, _clean(equity), _clean(paper.wallet_balance), _clean(available), _clean(unrealised))

    def funding_payments(self, *, since_ms: int, until_ms: int, settle_coin: str = SETTLE_COIN) -> list[FundingState]:
        """Funding settled on positions with since_ms <= time <= until_ms, oldest first (funding due is settled
        first)."""
        self._settled()
        rows = PaperFunding.objects.filter(
            account=self.account, settled_at__gte=_from_ms(since_ms), settled_at__lte=_from_ms(until_ms)
        ).order_by("settled_at", "symbol")
        rows = list(rows)
        self._instruments_load(row.symbol for row in rows)
        return [
            FundingState(
                symbol=row.symbol,
                time_ms=_ms(row.settled_at),
                rate=_clean(row.rate),
                position_qty=_clean(row.position_qty),
                mark_price=_clean(row.mark_price),
                amount=_clean(row.amount),
            )
            for row in rows
            if self._settle_of(row.symbol) == settle_coin
        ]


def _read_then_write(read: Callable[[], _R], write: Callable[[_R], _A | Exception]) -> _A:
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


def _net(held: Decimal, avg_price: Decimal, signed: Decimal, price: Decimal) -> tuple[Decimal, Decimal, Decimal]:
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


def _order_id(pk: int) -> str:
    return f"{_ORDER_ID_PREFIX}{pk}"


def _order_pk(exchange_order_id: str | None) -> int | None:
    if not exchange_order_id or not exchange_order_id.startswith(_ORDER_ID_PREFIX):
        return None
    digits = exchange_order_id.removeprefix(_ORDER_ID_PREFIX)
    return int(digits) if digits.isdigit() else None


def paper_exchange_for(
    account: ExchangeAccount,
    *,
    price_of: Callable[[str], Decimal | None],
    now: Callable[[], datetime],
    config: SelectionConfig,
) -> PaperExchange:
    """The PaperExchange of ``account`` with the selection configuration's taker fee, slippage and default funding
    rate (the same costs the backtest charges); stored funding rates first."""
    return PaperExchange(
        account,
        price_of=price_of,
        now=now,
        fee_rate=Decimal(str(config.taker_fee)),
        slippage=Decimal(str(config.slippage)),
        funding_rate_of=StoredFundingRates(
            exchange=account.exchange, default=Decimal(str(config.default_funding_rate))
        ),
    )
