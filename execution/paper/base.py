"""The paper exchange's account: its instruments, prices and clock, and the locked read of its wallet and positions
that every state change starts with. ``PaperExchange`` builds on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal

from django.db import DatabaseError

from core.clock import Clock
from core.row_updates import row_update
from exchanges.errors import NotSupported, PermanentExchangeError, TemporaryExchangeError
from execution.locks import lock_paper_books
from execution.models import ExchangeAccount, PaperAccount, PaperFunding, PaperPosition
from execution.paper.book import read_then_write, stored
from execution.paper.funding import FundingSettlement, StoredFundingRates
from pairs.market import MarketView
from pairs.models import Instrument
from pairs.quant.fills import SlippageModel, check_delay

SETTLE_COIN = "USDT"


class PaperBase(FundingSettlement):
    """Lookups, prices, the clock and the locked account read of one paper account (see ``PaperExchange``)."""

    def __init__(
        self,
        account: ExchangeAccount,
        *,
        market: MarketView,
        clock: Clock | None = None,
        fee_rate: Decimal,
        slippage: Decimal,
        funding_rate_of: Callable[[str, datetime], Decimal] | None = None,
        settle_coin: str = SETTLE_COIN,
        slippage_model: SlippageModel | None = None,
        execution_delay_bars: int = 0,
    ):
        if account.mode != ExchangeAccount.Mode.PAPER:
            raise NotSupported(f"Account {account.name!r} is in {account.mode!r} mode: it trades on the exchange.")
        for name, value in (("fee_rate", fee_rate), ("slippage", slippage)):
            if not isinstance(value, Decimal) or not value.is_finite() or not 0 <= value < 1:
                raise ValueError(f"{name} must be a Decimal fraction in [0, 1), got {value!r}")
        self.account = account
        self.fee_rate = fee_rate
        self.slippage = slippage  # the fixed part
        # The variable part of the slippage and the delay of the execution model (``pairs.quant.fills``).
        self.slippage_model = slippage_model or SlippageModel(fixed=float(slippage))
        self.execution_delay_bars = check_delay(execution_delay_bars)
        self.settle_coin = settle_coin
        self._market = market
        self._clock_source = clock or market.clock
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
        """Ask the market for the prices of ``symbols`` not in ``marks`` yet, at once (one query for StoredMarket),
        before ``_mark`` reads them one by one."""
        missing = [symbol for symbol in symbols if symbol not in marks]
        if missing:
            self._instruments_load(missing)
            ids = {self._instruments[s].pk: s for s in missing if self._instruments.get(s) is not None}
            closes = self._market.closes(ids)
            for instrument_id, symbol in ids.items():
                marks[symbol] = positive(closes.get(instrument_id))

    def _price_of(self, symbol: str) -> Decimal | None:
        """The market's price of ``symbol`` now (the newest closed bar's close), None when it has none."""
        instrument = self._instrument(symbol)
        if instrument is None:
            return None
        return self._market.closes([instrument.pk]).get(instrument.pk)

    def _fill_quote(self, symbol: str) -> tuple[Decimal, Decimal, datetime | None]:
        """(price before slippage, slippage fraction, fill time or None for the clock) of a market order on
        ``symbol`` placed now, by the execution model: the market's ``fill_quotes`` (the open of the bar after the
        newest closed one, ``execution_delay_bars`` later, at that bar's open time; the variable slippage from the
        bar before it). A market that quotes only closes gives the newest close and the fixed slippage.
        TemporaryExchangeError without a price."""
        instrument = self._instrument(symbol)
        quotes = getattr(self._market, "fill_quotes", None)
        if instrument is None or quotes is None:
            return self._price(symbol), self.slippage, None
        quote = quotes([instrument.pk], delay_bars=self.execution_delay_bars).get(instrument.pk)
        price = positive(quote.price) if quote is not None else None
        if price is None:
            raise TemporaryExchangeError(f"paper exchange: no price for {symbol} yet")
        variable = self.slippage_model.variable(quote.reference_open, quote.reference_high, quote.reference_low,
                                                quote.reference_turnover)
        return price, self.slippage + Decimal(repr(float(variable))), quote.filled_at

    def _settle_of(self, symbol: str) -> str:
        instrument = self._instrument(symbol)
        if instrument is None:
            return self.settle_coin
        return instrument.settle or instrument.quote or self.settle_coin

    def _clock(self) -> datetime:
        moment = self._clock_source.now()
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
            marks[symbol] = positive(self._price_of(symbol))
        return marks[symbol]

    # ------------------------------------------------------------------------------------------------ the account

    def _locked_account(self, now: datetime, *, symbol: str | None = None
                        ) -> tuple[PaperAccount, list[PaperPosition]]:
        """The PaperAccount and its open positions (with ``symbol``'s row even at zero), by symbol, their rows locked
        until the transaction ends: one statement, which locks the ExchangeAccount row too. Call inside
        transaction.atomic. A wallet that doesn't exist yet comes back unsaved (no primary key), with the account's
        capital and no funding due for the past: the caller saves it with its first write (``_write``), so a refused
        order writes nothing at all.

        The locks are taken in the order ``execution.locks`` fixes (the ExchangeAccount row, then the paper rows), and
        every paper write happens under them.
        """
        rows = lock_paper_books(self.account, symbol=symbol)
        if not rows:
            raise PermanentExchangeError(f"paper exchange: account {self.account.name!r} no longer exists")
        paper_id, wallet_balance, settled_until = rows[0][:3]
        if paper_id is None:
            paper = PaperAccount(account=self.account, wallet_balance=stored(self.account.capital),
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
            save_fields(paper, ["wallet_balance", "funding_settled_until"])
        if funding:
            PaperFunding.objects.bulk_create(funding)

    def _settled(self) -> tuple[PaperAccount, list[PaperPosition], dict[str, Decimal | None]]:
        """Settle funding due up to now (in its own transaction) and return the account, its open positions and
        the prices asked for on the way."""
        marks: dict[str, Decimal | None] = {}
        now = self._clock()

        def write(read: tuple[PaperAccount, list[PaperPosition], list[PaperFunding] | None]):
            paper, positions, funding = read
            self._write(paper, funding)
            return paper, positions

        paper, positions = read_then_write(lambda: self._settlement_read(now, marks), write)
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


def positive(price) -> Decimal | None:
    """A usable price: a finite positive Decimal, else None."""
    if price is None:
        return None
    if not isinstance(price, Decimal):
        price = Decimal(str(price))
    return price if price.is_finite() and price > 0 else None


def save_fields(instance, fields: list[str]) -> None:
    """``instance.save(update_fields=fields)`` of a stored row, as one UPDATE built once (``core.row_updates``): the
    paper exchange writes its wallet every bar of a replay and its positions at every fill (#18)."""
    written = row_update(instance, fields)
    if written is None:
        instance.save(update_fields=fields)
    elif not written:
        raise DatabaseError(f"{type(instance).__name__} {instance.pk} is gone: nothing was written")
