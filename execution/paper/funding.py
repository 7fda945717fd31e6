"""Funding on paper: the rates (stored ones, else the configured default) and the lazy settlement of every funding
time a position held through, as Bybit settles it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from execution.models import PaperAccount, PaperFunding, PaperPosition
from execution.paper.book import stored as _stored
from pairs.marketdata.funding import FUNDING_GRID_MINUTES, funding_interval_minutes, settlement_times, settles_between
from pairs.models import FundingRate, StrategyConfig


def stored_funding_rate(symbol: str, time: datetime, *, exchange: str, default: Decimal | None = None) -> Decimal:
    """The funding rate of ``symbol`` settled at ``time``: the stored pairs FundingRate, else ``default``, else
    StrategyConfig.current().default_funding_rate."""
    rate = (
        FundingRate.objects.filter(instrument__exchange=exchange, instrument__symbol=symbol, funding_time=time)
        .values_list("rate", flat=True)
        .first()
    )
    if rate is not None:
        return rate
    if default is None:
        default = Decimal(str(StrategyConfig.current().default_funding_rate))
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
            default = Decimal(str(StrategyConfig.current().default_funding_rate))
        return {key: stored.get(key, default) for key in keys}



class FundingSettlement:
    """The paper exchange's funding, as a part of ``PaperExchange`` (it uses the exchange's instruments, marks and
    rates)."""

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
        is not known lazily: the mark is the market's price now (the position's entry price when there is none), a
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
