"""Detectors of abnormal conditions. Each looks at the accounts' books (and a few reads shared by all accounts) and
returns what it found as breaches; the cycle applies each check's configured action.

Those that read the exchange (balance, positions) are in ``monitoring.guard.exchange_reads``. Where the guard can't
see (an exchange it can't read, a held leg without a price) it reports that as a breach of its own, which stops the
account's entries: a blind guard fails closed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from execution.models import BotHeartbeat, Order, PairTrade
from monitoring.guard.book import AccountBook
from monitoring.guard.limits import Breach
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Instrument
from pairs.selectors import newest_open_times
from risk.models import GuardEvent
from risk.policy import Limits

logger = logging.getLogger(__name__)

# Guard events that count as API errors in a burst (the bots record them when the exchange fails them).
ERROR_EVENT_KINDS = ("exchange_unreachable", "reconcile_failed")


def stale_data(books: dict[int, AccountBook], limits: dict[int, Limits], *, now: datetime, timeframe: str
               ) -> list[Breach]:
    """The newest stored bar is older than the limit: for the whole market, or for a leg an account holds."""
    if all(limits[account_id].stale_data_minutes is None for account_id in books):
        return []  # the check is off for every account: nothing to read
    bar = timedelta(milliseconds=timeframe_ms(timeframe))
    # Each instrument's newest bar by one index seek (a MAX over the candles scanned all of them: 0.16 s a guard
    # cycle with 100 symbols, most of a replayed bar's time, #18); the legs' are among them.
    newest = newest_open_times(timeframe=timeframe, until=now)
    newest_any = max(newest.values(), default=None)
    breaches = []
    for account_id, book in books.items():
        minutes = limits[account_id].stale_data_minutes
        if minutes is None:
            continue
        oldest_ok = now - bar - timedelta(minutes=minutes)
        if newest_any is None or newest_any < oldest_ok:
            breaches.append(Breach("stale_data", account_id, f"no market data since {_at(newest_any)} (limit "
                                   f"{minutes} min)"))
            continue
        stale_ids = {leg.instrument_id for t in book.open_trades for leg in t.legs.values()
                     if newest.get(leg.instrument_id) is None or newest[leg.instrument_id] < oldest_ok}
        if stale_ids:
            stale = sorted(Instrument.objects.filter(pk__in=stale_ids).values_list("symbol", flat=True))
            breaches.append(Breach("stale_data", account_id, f"no recent bars of {', '.join(stale)} (limit "
                                   f"{minutes} min)", details={"symbols": stale}))
    return breaches


def stale_heartbeats(books: dict[int, AccountBook], limits: dict[int, Limits], *, now: datetime) -> list[Breach]:
    """An enabled account whose bot has not beaten within the limit (its worker stopped or hangs)."""
    beats = dict(BotHeartbeat.objects.filter(account_id__in=list(books)).values_list("account_id", "beat_at"))
    breaches = []
    for account_id, book in books.items():
        seconds = limits[account_id].heartbeat_stale_seconds
        if seconds is None or not book.account.enabled:
            continue
        beat = beats.get(account_id)
        if beat is None and book.state is None:
            continue  # the guard's first sight of a new account: its bot gets a cycle to start before it is missed
        if beat is None or now - beat > timedelta(seconds=seconds):
            breaches.append(Breach("heartbeat", account_id, f"the bot has not run since {_at(beat)} (limit "
                                   f"{seconds} s)"))
    return breaches


def leg_problems(books: dict[int, AccountBook], limits: dict[int, Limits], *, now: datetime) -> list[Breach]:
    """A trade holding one leg for too long, and an open trade whose legs' notionals drifted apart."""
    breaches = []
    for account_id, book in books.items():
        limit = limits[account_id]
        for open_trade in book.open_trades:
            trade, y, x = open_trade.trade, open_trade.legs["y"], open_trade.legs["x"]
            since = trade.state_changed_at or trade.created_at
            if limit.one_leg_seconds is not None and (y.qty == 0) != (x.qty == 0) and \
                    now - since > timedelta(seconds=limit.one_leg_seconds):
                held = "y" if y.qty else "x"
                breaches.append(Breach("one_leg", account_id, f"trade {trade.pk} (pair {trade.pair_id}) holds only its "
                                       f"{held} leg since {_at(since)}", pair_id=trade.pair_id,
                                       details={"trade": trade.pk}))
            elif limit.leg_imbalance_pct is not None and trade.state == PairTrade.State.OPEN and y.qty and x.qty \
                    and y.mark is not None and x.mark is not None:
                beta = Decimal(repr(abs(trade.hedge_ratio)))
                balanced = beta * y.notional
                imbalance = abs(x.notional - balanced) / (x.notional + balanced)
                if imbalance > Decimal(repr(limit.leg_imbalance_pct)):
                    breaches.append(Breach("leg_imbalance", account_id, f"trade {trade.pk} (pair "
                                           f"{trade.pair_id}): legs {float(imbalance):.1%} out of balance (limit "
                                           f"{limit.leg_imbalance_pct:.0%})", pair_id=trade.pair_id,
                                           details={"trade": trade.pk, "imbalance": float(imbalance)}))
    return breaches


def error_bursts(books: dict[int, AccountBook], limits: dict[int, Limits], *, now: datetime,
                 process_now: datetime) -> list[Breach]:
    """Rejected orders and API errors within the window (the widest any account uses, counted per account).

    The orders are planned on the market's clock (``now``); the API errors are events the processes record on
    theirs (``process_now``, the wall clock). Each is counted on its own clock, up to its own now: on the demo's
    stored-data clock (market time years behind the wall clock) every event ever recorded fell after the market's
    window start, and a replay's would count the wall clock's events."""
    windows = {a: limits[a].error_burst_minutes for a in books if limits[a].error_burst_count is not None}
    if not windows:
        return []
    widest = timedelta(minutes=max(windows.values()))
    rejected = _times_by_account(Order.objects.filter(
        trade__account_id__in=list(windows), status=Order.Status.REJECTED, planned_at__gt=now - widest,
        planned_at__lte=now,
    ).values_list("trade__account_id", "planned_at"))
    events = _times_by_account(GuardEvent.objects.filter(
        account_id__in=list(windows), kind__in=ERROR_EVENT_KINDS, created_at__gt=process_now - widest,
        created_at__lte=process_now,
    ).values_list("account_id", "created_at"))
    breaches = []
    for account_id, minutes in windows.items():
        window = timedelta(minutes=minutes)
        n = (sum(1 for t in rejected.get(account_id, []) if t > now - window)
             + sum(1 for t in events.get(account_id, []) if t > process_now - window))
        if n >= limits[account_id].error_burst_count:
            breaches.append(Breach("error_burst", account_id, f"{n} rejected orders or API errors in the last "
                                   f"{minutes} min (limit {limits[account_id].error_burst_count})"))
    return breaches


def slippage(books: dict[int, AccountBook], limits: dict[int, Limits], *, now: datetime, since: datetime
             ) -> list[Breach]:
    """Fills sent since ``since`` whose average price is further from the planning price than the limit."""
    ids = [a for a in books if limits[a].slippage_bps is not None]
    if not ids:
        return []
    breaches = []
    for account_id, pair_id, order_id, ref, avg, side in Order.objects.filter(
        trade__account_id__in=ids, reference_price__gt=0, avg_price__isnull=False, filled_qty__gt=0,
        submitted_at__gt=since, submitted_at__lte=now,
    ).values_list("trade__account_id", "trade__pair_id", "client_order_id", "reference_price", "avg_price", "side"):
        # Only a worse price is slippage: paying more on a buy, getting less on a sell.
        worse = (avg - ref) if side == Order.Side.BUY else (ref - avg)
        bps = float(worse / ref) * 10_000
        if bps > limits[account_id].slippage_bps:
            breaches.append(Breach("slippage", account_id, f"order {order_id} filled {bps:.0f} bps worse than "
                                   f"planned ({avg} vs {ref}; limit {limits[account_id].slippage_bps:g} bps)",
                                   pair_id=pair_id, details={"order": order_id, "bps": bps}))
    return breaches


def missing_marks(books: dict[int, AccountBook]) -> list[Breach]:
    """A held leg without any price: the account's equity, daily PnL and drawdown are guesses (the leg at cost)."""
    ids = {i for book in books.values() for i in book.missing_marks}
    if not ids:
        return []
    symbols = dict(Instrument.objects.filter(pk__in=ids).values_list("pk", "symbol"))
    breaches = []
    for account_id, book in books.items():
        if book.missing_marks:
            names = sorted(symbols.get(i, str(i)) for i in book.missing_marks)
            breaches.append(Breach("missing_marks", account_id, f"no price for the held legs {', '.join(names)}: "
                                   "equity, daily loss and drawdown can't be measured", details={"symbols": names}))
    return breaches


def queue_lengths(lengths: dict[str, int], maximum: int | None) -> list[Breach]:
    """Celery queues longer than the limit (system-wide: ``account_id`` 0)."""
    if maximum is None:
        return []
    return [Breach("queue", 0, f"the Celery queue {name} holds {n} tasks (limit {maximum})",
                   details={"queue": name, "length": n})
            for name, n in sorted(lengths.items()) if n > maximum]


def _times_by_account(rows) -> dict[int, list[datetime]]:
    by_account: dict[int, list[datetime]] = defaultdict(list)
    for account_id, at in rows:
        by_account[account_id].append(at)
    return by_account


def _at(moment: datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"

