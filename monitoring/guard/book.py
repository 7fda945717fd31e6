"""What the guard measures, for many accounts at once in a fixed number of queries: equity marked to market, the
day's start, open trades with their legs, losing streaks.

Equity is measured one way everywhere: capital + realised PnL of finished trades (net of their fees and funding)
+ the open trades' PnL marked to the latest price (both legs' filled quantities at the mark, minus what they cost,
minus their fees, plus their funding). The exchange's executions are the truth: open PnL comes from fills, not
from planned quantities. A leg whose feed stopped (no close in the market's last few bars) is marked at its last
known close: valuing it at cost would hide its loss from the daily-loss and drawdown limits. A held leg with no
close at all is a missing mark (``AccountBook.missing_marks``), which stops the account's entries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property

from django.db.models import DecimalField, OuterRef, Subquery

from core.statements import CompiledRead
from execution.models import ExchangeAccount, Fill, Order, PairTrade
from monitoring.guard.book_totals import TradeTotals, trade_totals
from pairs.market import MarketView
from pairs.selectors import newest_closes
from risk.models import AccountGuardState, DailyPnlSnapshot

ZERO = Decimal(0)
Money = DecimalField(max_digits=32, decimal_places=12)


def day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time.min, tzinfo=UTC)


@dataclass
class LegPosition:
    instrument_id: int
    qty: Decimal = ZERO  # signed: bought minus sold
    cost: Decimal = ZERO  # signed: what was paid for it (negative when sold)
    fees: Decimal = ZERO
    mark: Decimal | None = None  # the current close, else the last known one (see ``stale``); None: no price at all
    stale: bool = False  # the mark is a close older than the market gives as a current price

    @property
    def value(self) -> Decimal | None:
        return None if self.mark is None else self.qty * self.mark

    @property
    def notional(self) -> Decimal:
        price = self.mark if self.mark is not None else (abs(self.cost / self.qty) if self.qty else ZERO)
        return abs(self.qty) * price


@dataclass(frozen=True)
class TradeRow:
    """The columns of an active trade the guard reads (model instances of a thousand trades cost more than the
    whole cycle's arithmetic)."""

    pk: int
    account_id: int
    pair_id: int
    state: str
    state_changed_at: datetime | None
    created_at: datetime
    hedge_ratio: float
    funding: Decimal
    y_instrument_id: int
    x_instrument_id: int


TRADE_COLUMNS = ("pk", "account_id", "pair_id", "state", "state_changed_at", "created_at", "hedge_ratio", "funding",
                 "pair__y_instrument_id", "pair__x_instrument_id")


@dataclass
class OpenTrade:
    trade: TradeRow
    legs: dict[str, LegPosition]  # "y" and "x"
    fills: int = 0  # how many fills the legs were built from (what the guard read of the trade)

    @property
    def unrealised(self) -> Decimal:
        """Marked-to-market PnL of what is held, net of fees paid so far and funding; a leg with no price at all
        is valued at its cost (no PnL): the book then lists it in ``missing_marks``, which stops new entries."""
        total = self.trade.funding
        for leg in self.legs.values():
            value = leg.value if leg.value is not None else leg.cost
            total += value - leg.cost - leg.fees
        return total

    @property
    def gross_notional(self) -> Decimal:
        return sum((leg.notional for leg in self.legs.values()), ZERO)


@dataclass(kw_only=True)
class AccountBook(TradeTotals):
    """One account at a cycle's clock: its finished trades' totals (``TradeTotals``: realised over every one,
    the day's sums, the losing streak), its open trades marked to market, and its equity from the snapshots."""

    account: ExchangeAccount
    open_trades: list[OpenTrade]
    start_of_day_equity: Decimal | None  # from the snapshots; None: the first day the guard sees
    previous_peak: Decimal | None = None  # the last earlier snapshot's peak
    state: AccountGuardState | None = None
    missing_marks: list[int] = field(default_factory=list)  # instruments held without any price: equity is a guess

    @cached_property  # the book is read, never changed, once built; every limit asks for it
    def unrealised(self) -> Decimal:
        return sum((t.unrealised for t in self.open_trades), ZERO)

    @property
    def equity(self) -> Decimal:
        return self.account.capital + self.realised + self.unrealised

    @property
    def day_start_equity(self) -> Decimal:
        """From the snapshots; on the first day the guard sees, the capital plus what finished before today (the
        open trades' PnL then counts as today's: the cautious side)."""
        if self.start_of_day_equity is not None:
            return self.start_of_day_equity
        return self.account.capital + self.realised - self.day_realised

    @property
    def day_pnl(self) -> Decimal:
        return self.equity - self.day_start_equity

    @cached_property
    def gross_exposure(self) -> Decimal:
        return sum((t.gross_notional for t in self.open_trades), ZERO)


# The fixed reads of every cycle (#18: compiled once, core.statements).
_SNAPSHOTS = CompiledRead(lambda ids, first, last: DailyPnlSnapshot.objects.filter(
    account_id__in=ids, date__gte=first, date__lte=last
).order_by("date").values_list("account_id", "date", "starting_equity", "ending_equity", "peak_equity"))
_STATES = CompiledRead(lambda ids: AccountGuardState.objects.filter(account_id__in=ids))
_ACTIVE_TRADES = CompiledRead(lambda ids: PairTrade.objects.filter(
    account_id__in=ids, state__in=PairTrade.ACTIVE_STATES
).order_by("pk").values_list(*TRADE_COLUMNS))
_ACTIVE_FILLS = CompiledRead(lambda ids: Fill.objects.filter(
    order__trade__account_id__in=ids, order__trade__state__in=PairTrade.ACTIVE_STATES
).values_list("order__trade_id", "order__leg", "order__side", "qty", "price", "fee"))


def account_books(accounts: list[ExchangeAccount], *, now: datetime, market: MarketView) -> dict[int, AccountBook]:
    """The book of each account at ``now``: six queries however many accounts and trades."""
    ids = [a.pk for a in accounts]
    if not ids:
        return {}
    today = now.astimezone(UTC).date()
    start = day_start(now)
    previous_end = _previous_day_ends(ids, today)
    totals = trade_totals(ids, start=start, now=now)
    open_trades = _open_trades(ids, market)
    states = {s.account_id: s for s in _STATES.list(ids)}
    books = {}
    for account in accounts:
        row = totals.get(account.pk) or TradeTotals()
        trades = open_trades.get(account.pk, [])
        books[account.pk] = AccountBook(
            **{f.name: getattr(row, f.name) for f in fields(row)}, account=account, open_trades=trades,
            start_of_day_equity=previous_end.get(account.pk, (None, None))[0],
            previous_peak=previous_end.get(account.pk, (None, None))[1], state=states.get(account.pk),
            missing_marks=sorted({leg.instrument_id for t in trades for leg in t.legs.values()
                                  if leg.mark is None and leg.qty}),
        )
    return books


def _previous_day_ends(ids: list[int], today: date) -> dict[int, tuple[Decimal, Decimal | None]]:
    """(start-of-day equity, the peak before today): today's snapshot's start if one was written today, else the
    newest earlier day's end; that day's peak."""
    rows: dict[int, list] = {}
    for account_id, snap_date, starting, ending, peak in _SNAPSHOTS.list(ids, today - timedelta(days=1), today):
        row = rows.setdefault(account_id, [None, None])
        if snap_date == today:
            row[0] = starting
        else:
            row[0], row[1] = ending, peak
    missing = [i for i in ids if rows.get(i, [None, None])[1] is None]
    if missing:
        # Older gaps (no snapshot yesterday): the newest earlier snapshot, one query for all of them.
        newest = DailyPnlSnapshot.objects.filter(account_id=OuterRef("pk"), date__lt=today).order_by("-date")
        for account_id, ending, peak in ExchangeAccount.objects.filter(pk__in=missing).annotate(
            ending=Subquery(newest.values("ending_equity")[:1]), peak=Subquery(newest.values("peak_equity")[:1])
        ).values_list("pk", "ending", "peak"):
            if ending is not None:
                row = rows.setdefault(account_id, [None, None])
                row[0] = ending if row[0] is None else row[0]
                row[1] = peak
    return {account_id: (row[0], row[1]) for account_id, row in rows.items() if row[0] is not None}


def _open_trades(ids: list[int], market: MarketView) -> dict[int, list[OpenTrade]]:
    trades = [TradeRow(*row) for row in _ACTIVE_TRADES.list(ids)]
    if not trades:
        return {}
    legs: dict[int, dict[str, LegPosition]] = {
        t.pk: {"y": LegPosition(t.y_instrument_id), "x": LegPosition(t.x_instrument_id)} for t in trades
    }
    fills: dict[int, int] = defaultdict(int)
    for trade_id, leg, side, qty, price, fee in _ACTIVE_FILLS.list(ids):
        signed = qty if side == Order.Side.BUY else -qty
        if trade_id not in legs:
            continue  # it became active between the two reads: the next cycle counts it
        fills[trade_id] += 1
        position = legs[trade_id][leg]
        position.qty += signed
        position.cost += signed * price
        position.fees += fee
    marks = market.closes({p.instrument_id for by_leg in legs.values() for p in by_leg.values()})
    held_without = {p.instrument_id for by_leg in legs.values() for p in by_leg.values()
                    if p.qty and p.instrument_id not in marks}
    last_known = last_known_closes(held_without, market) if held_without else {}
    books: dict[int, list[OpenTrade]] = defaultdict(list)
    for trade in trades:
        for position in legs[trade.pk].values():
            position.mark = marks.get(position.instrument_id)
            if position.mark is None and position.instrument_id in last_known:
                position.mark, position.stale = last_known[position.instrument_id], True
        books[trade.account_id].append(OpenTrade(trade, legs[trade.pk], fills[trade.pk]))
    return books


def last_known_closes(instrument_ids: Iterable[int], market: MarketView) -> dict[int, Decimal]:
    """The close of each instrument's newest bar closed at the market's clock, however old (``market.closes`` drops
    those older than a few bars: no price to trade at, but still the best value of a leg that is held). Two
    queries, only when a held leg has no current price; instruments never priced are absent."""
    newest = market.newest_bars(instrument_ids, end=None)
    if not newest:
        return {}
    # Each instrument has no bar after its newest up to the clock, so in (oldest newest, newest newest] the newest
    # close of each is the one at its own newest bar.
    return newest_closes(list(newest), market.timeframe, newest_open=max(newest.values()),
                         oldest_open=min(newest.values()) - timedelta(microseconds=1))
