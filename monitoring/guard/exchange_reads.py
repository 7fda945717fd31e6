"""What the guard reads from a demo or real account's exchange each cycle, and what it does with it.

One read per account (positions and balance), before any limit is measured:

- the open trades' legs are marked at the exchange's mark prices. The stored candles close once an hour, the guard
  runs every minute: marked only at the last close, a crash within the hour stays out of the daily loss and the
  drawdown until the next candle lands (and the balance check, comparing the exchange's equity with the book's,
  reads the hour's move as money gone missing). The exchange values positions at its mark price, so the book and
  the exchange's equity then move together;
- positions that differ from the trades' executions, and a change of the exchange's equity that the book's change
  does not explain, are breaches; an account that can't be read fails closed (``exchange_unreadable``).

The bots trade while the guard reads. A leg of a trade in flight (an order sent whose answer was lost, whose fills
are not written yet) is held at the exchange before the trades know it: its symbols are left out of the position
check for IN_FLIGHT_GRACE, while the bot settles it by its client id (it reconciles them itself, and halts its own
entries on what it can't explain). An account whose trades changed between the guard's reading of its book and of
its exchange (a bot's close or opening filled meanwhile) is compared again at the next cycle: its two reads are of
two different moments.

A paper account is skipped: its exchange is our own simulator, whose book is the database the guard already reads.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import DatabaseError
from django.db.models import Count

from core.secrets import redact
from exchanges.base import TradingExchange
from exchanges.errors import ExchangeError
from exchanges.types import PositionState
from execution.models import ExchangeAccount, PairTrade
from monitoring.guard.book import AccountBook
from monitoring.guard.limits import Breach
from pairs.models import Instrument
from risk.policy import Limits

logger = logging.getLogger(__name__)

# How long a trade in flight (planned, opening, closing) keeps its symbols out of the position check: the longest
# the bot keeps an unknown order before it gives it up (README, "answers that prove less than they seem"). A trade
# stuck longer is compared again: what the exchange holds beyond its fills is then a difference.
IN_FLIGHT_GRACE = timedelta(minutes=30)


@dataclass
class ExchangeReading:
    """One account's positions (by symbol) and equity as the exchange gave them, or why it couldn't be read."""

    positions: dict[str, PositionState] = field(default_factory=dict)
    equity: Decimal | None = None
    symbols: dict[int, str] = field(default_factory=dict)  # instrument id -> the exchange's symbol
    error: Exception | None = None
    moved: bool = False  # the account's trades changed while it was read: the two sides are of different moments


def exchange_read(books: dict[int, AccountBook], exchange_for: Callable[[ExchangeAccount], TradingExchange]
                  ) -> dict[int, ExchangeReading]:
    """Each demo or real account's positions and balance (one account's failure doesn't stop the others)."""
    instruments = Instrument.objects.in_bulk({leg.instrument_id for book in books.values()
                                              if book.account.mode != ExchangeAccount.Mode.PAPER
                                              for t in book.open_trades for leg in t.legs.values()})
    readings = {}
    for account_id, book in books.items():
        if book.account.mode == ExchangeAccount.Mode.PAPER:
            continue
        reading = ExchangeReading()
        try:
            exchange = exchange_for(book.account)
            reading.symbols = {leg.instrument_id: exchange.symbol_for(instruments[leg.instrument_id])
                               for t in book.open_trades for leg in t.legs.values()}
            reading.positions = {p.symbol: p for p in exchange.positions()}
            reading.equity = exchange.balance().equity
        except DatabaseError:
            raise  # not the exchange: the guard can't record anything without the database either
        except Exception as exc:  # noqa: BLE001 - one account's failure must not blind the guard to the others
            # Any failure, not only the exchange's (missing keys, a bug, the cycle's time running out): this
            # account's positions and balance are unknown, so it fails closed, and the other accounts are still
            # checked. No exchange equity for it: its balance baselines stay where they were (cycle._remember).
            reading = ExchangeReading(error=exc)
        readings[account_id] = reading
    _note_moved(books, readings)
    return readings


def _note_moved(books: dict[int, AccountBook], readings: dict[int, ExchangeReading]) -> None:
    """Mark the readings of accounts whose active trades (their states, their fills) are no longer those of the
    book: a bot traded between the guard's two reads. One query, only when an exchange was read."""
    ids = [account_id for account_id, reading in readings.items() if reading.error is None]
    if not ids:
        return
    now: dict[int, set] = {account_id: set() for account_id in ids}
    for account_id, pk, state, fills in PairTrade.objects.filter(
            account_id__in=ids, state__in=PairTrade.ACTIVE_STATES).annotate(
            fills=Count("orders__fills")).values_list("account_id", "pk", "state", "fills"):
        now[account_id].add((pk, state, fills))
    for account_id in ids:
        read = {(t.trade.pk, t.trade.state, t.fills) for t in books[account_id].open_trades}
        readings[account_id].moved = read != now[account_id]


def mark_at_exchange(books: dict[int, AccountBook], readings: dict[int, ExchangeReading]) -> None:
    """Mark each held leg at the exchange's mark price for its symbol, where the exchange holds it and gives one
    (the book must not have been measured yet: its unrealised PnL is computed once)."""
    for account_id, reading in readings.items():
        book = books[account_id]
        if reading.error is not None:
            continue
        for open_trade in book.open_trades:
            for leg in open_trade.legs.values():
                position = reading.positions.get(reading.symbols.get(leg.instrument_id, ""))
                if leg.qty and position is not None and position.qty and position.mark_price:
                    leg.mark, leg.stale = position.mark_price, False
        book.missing_marks = sorted({leg.instrument_id for t in book.open_trades for leg in t.legs.values()
                                     if leg.mark is None and leg.qty})


def exchange_checks(books: dict[int, AccountBook], limits: dict[int, Limits],
                    readings: dict[int, ExchangeReading], *, now: datetime) -> tuple[list[Breach], dict[int, Decimal]]:
    """Positions that differ from the trades' executions, a change of the exchange's equity that the book's change
    does not explain, an account not read. Returns the breaches and each account's exchange equity (none for an
    account whose trades changed while it was read)."""
    breaches, equities = [], {}
    for account_id, reading in readings.items():
        book = books[account_id]
        if reading.error is not None:
            breaches.append(_unreadable(book, reading.error))
            continue
        if reading.moved:
            # Nor is its equity remembered: the balance check's two baselines stay where they were
            # (cycle._remember), to be compared at the next cycle.
            logger.info("guard: account %s traded while the guard read it: compared at the next cycle",
                        book.account.name)
            continue
        breaches += _position_mismatches(book, reading, now=now)
        equities[account_id] = reading.equity
        breaches += _balance_change(book, limits[account_id], reading.equity)
    return breaches, equities


def _unreadable(book: AccountBook, exc: Exception) -> Breach:
    text = redact(f"{type(exc).__name__}: {exc}")[:300]
    # An exchange error is expected now and then and says enough; anything else gets its traceback.
    logger.warning("guard: account %s: the exchange could not be read, its new entries stop: %s", book.account.name,
                   text, exc_info=(type(exc), exc, exc.__traceback__) if not isinstance(exc, ExchangeError) else False)
    return Breach("exchange_unreadable", book.account.pk, f"the guard could not read the exchange: {text}",
                  details={"error": type(exc).__name__})


def _position_mismatches(book: AccountBook, reading: ExchangeReading, *, now: datetime) -> list[Breach]:
    expected: dict[str, Decimal] = defaultdict(Decimal)
    in_flight: set[str] = set()  # symbols a trade in flight trades: the bot settles them (see the module's doc)
    for open_trade in book.open_trades:
        trade = open_trade.trade
        settling = trade.state != PairTrade.State.OPEN and \
            now - (trade.state_changed_at or trade.created_at) < IN_FLIGHT_GRACE
        for leg in open_trade.legs.values():
            expected[reading.symbols[leg.instrument_id]] += leg.qty
            if settling:
                in_flight.add(reading.symbols[leg.instrument_id])
    held = {symbol: p.qty for symbol, p in reading.positions.items()}
    wrong = sorted(f"{s}: exchange {_qty(held.get(s, Decimal(0)))}, trades {_qty(expected.get(s, Decimal(0)))}"
                   for s in (set(expected) | set(held)) - in_flight
                   if held.get(s, Decimal(0)) != expected.get(s, Decimal(0)))
    if not wrong:
        return []
    return [Breach("position_mismatch", book.account.pk, "positions differ from the trades: " + "; ".join(wrong),
                   details={"positions": wrong})]


def _balance_change(book: AccountBook, limit: Limits, exchange_equity: Decimal) -> list[Breach]:
    state = book.state
    if limit.balance_tolerance_pct is None or state is None or state.exchange_equity is None or state.equity is None:
        return []
    unexplained = (exchange_equity - state.exchange_equity) - (book.equity - state.equity)
    tolerance = book.account.capital * Decimal(repr(limit.balance_tolerance_pct))
    if abs(unexplained) <= tolerance:
        return []
    return [Breach("balance", book.account.pk, f"the exchange's equity moved {unexplained:+.2f} more than trades, "
                   f"fees and funding explain (tolerance {tolerance:.2f})",
                   details={"unexplained": str(unexplained)})]


def _qty(value: Decimal) -> str:
    return format(value.normalize(), "f")
