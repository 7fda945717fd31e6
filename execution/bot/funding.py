"""Funding settled on the trades' positions, read from the exchange and split over the trades holding each symbol."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q, Sum

from exchanges.errors import ExchangeError
from exchanges.types import FundingState
from execution.bot.book import instrument_of, orders_of
from execution.models import BotHeartbeat, Fill, FundingPayment, Order, PairTrade
from execution.services.context import LEASE_TTL, TradingContext
from execution.services.orders import LEGS, leg_net, signed
from pairs.marketdata.funding import funding_interval_minutes, settlement_times, settles_between
from pairs.models import Instrument

FUNDING_OVERLAP = timedelta(hours=1)
# A watermark held back for a settlement not listed yet stays this much before it (settlements fall on whole hours).
_JUST_BEFORE = timedelta(seconds=1)
CLOSING_ACTIONS = (Order.Action.CLOSE, Order.Action.UNWIND)


def sync_funding(ctx: TradingContext, trades: list[PairTrade], heartbeat: BotHeartbeat) -> int:
    """Record funding settled since the last sync, split over the trades holding each symbol by their size.

    When a read fails, the trades that finish before the next read may have held a position through a settlement:
    the heartbeat keeps the failed read's start (``funding_unsynced_since``) and the next read attributes such a
    payment to the trade that held it then (its fills up to the settlement), correcting that trade's funding and
    realised PnL, instead of recording it without a trade (or not at all when no trade is left open).

    The exchange lists a settlement's payments some seconds after it: a read right after a settlement at which the
    trades held a position may not show its payment yet. The watermark then stays just before that settlement and
    ``funding_unsynced_since`` is set to it, so the next ticks read it again (and a trade that finishes meanwhile
    still gets it), until it is listed or an hour (``FUNDING_OVERLAP``) has passed since it."""
    late = _closed_while_unsynced(ctx, heartbeat)
    holders = [*trades, *late]
    opened = [t.opened_at for t in holders if t.opened_at]
    if not opened:
        return 0  # nothing held: no funding to attribute
    # Funding before the oldest trade opened concerns none of them (and a long idle spell needs no reading).
    since = max(heartbeat.funding_synced_until or min(opened), min(opened) - FUNDING_OVERLAP)
    if since >= ctx.now or not _settlement_between(since, ctx.now, holders):
        if late:  # nothing settled while they were held: nothing left to find for them
            _mark_unsynced(heartbeat, None)
        return 0
    # Read an hour back again: a settlement the exchange listed late is caught; one already recorded is skipped.
    read_from = since - FUNDING_OVERLAP
    since_ms, until_ms = int(read_from.timestamp() * 1000) + 1, int(ctx.now.timestamp() * 1000)
    try:
        listed = ctx.exchange.funding_payments(since_ms=since_ms, until_ms=until_ms)
    except ExchangeError as exc:
        ctx.events.append(f"funding not synced this tick: {exc}")
        if heartbeat.funding_unsynced_since is None:
            _mark_unsynced(heartbeat, read_from)
        return 0
    rows = _attributed(ctx, trades, late, _not_recorded(ctx, listed, read_from))
    touched = {row.trade_id for row in rows if row.trade_id is not None}
    # A settlement held through whose payment is not listed yet: the watermark stays before it (read again).
    unlisted = _first_unlisted(ctx, since, trades, late, listed)
    synced_until = ctx.now if unlisted is None else unlisted - _JUST_BEFORE
    with transaction.atomic():
        ctx.hold_lease()
        FundingPayment.objects.bulk_create(rows, ignore_conflicts=True)
        if touched:
            _update_trade_funding(ctx, [t for t in holders if t.pk in touched])
        BotHeartbeat.objects.filter(pk=heartbeat.pk).update(funding_synced_until=synced_until,
                                                            funding_unsynced_since=unlisted)
    heartbeat.funding_synced_until, heartbeat.funding_unsynced_since = synced_until, unlisted
    return len(rows)


def funding_after_closes(heartbeat: BotHeartbeat, finished: list[PairTrade]) -> None:
    """Trades that finished in a tick: their close orders went out after the tick's clock was read, and a settlement
    may have fallen before they filled (the exchange then charges it on the position). The next funding read treats
    them as it treats trades finished while a read failed: a payment it finds goes to the trade that held it."""
    closed = [t.closed_at for t in finished if t.opened_at is not None and t.closed_at is not None]
    if closed and (heartbeat.funding_unsynced_since is None or min(closed) < heartbeat.funding_unsynced_since):
        _mark_unsynced(heartbeat, min(closed))


def _mark_unsynced(heartbeat: BotHeartbeat, since: datetime | None) -> None:
    BotHeartbeat.objects.filter(pk=heartbeat.pk).update(funding_unsynced_since=since)
    heartbeat.funding_unsynced_since = since


def _closed_while_unsynced(ctx: TradingContext, heartbeat: BotHeartbeat) -> list[PairTrade]:
    """The account's trades that finished since a funding read failed, with their fills (no query otherwise)."""
    if heartbeat.funding_unsynced_since is None:
        return []
    late = list(PairTrade.objects.filter(account=ctx.account, state__in=PairTrade.FINAL_STATES,
                                         opened_at__isnull=False,
                                         closed_at__gte=heartbeat.funding_unsynced_since - FUNDING_OVERLAP)
                .select_related("pair__y_instrument", "pair__x_instrument").order_by("pk"))
    held: dict[tuple[int, str], Decimal] = {}
    closes: dict[tuple[int, str], list[tuple[datetime, Decimal]]] = {}
    # What it held between opening and closing: every fill but those of its closing orders. The bot's own times
    # bound the holding (its clock is the one the settlement times are compared with), not the fills' times; past
    # its close, the closing fills' own times say what was still held (``_held_at``).
    rows = (Fill.objects.filter(order__trade__in=late)
            .values_list("order__trade_id", "order__leg", "order__side", "qty", "order__action", "filled_at"))
    for trade_id, leg, side, qty, action, filled_at in rows:
        if action in CLOSING_ACTIONS:
            closes.setdefault((trade_id, leg), []).append((filled_at, signed(side, qty)))
        else:
            held[trade_id, leg] = held.get((trade_id, leg), Decimal(0)) + signed(side, qty)
    for trade in late:
        trade.account = ctx.account
        trade.held_by_leg = {leg: held.get((trade.pk, leg), Decimal(0)) for leg in LEGS}
        trade.closes_by_leg = {leg: closes.get((trade.pk, leg), []) for leg in LEGS}
    return late


def _held_at(trade: PairTrade, leg: str, moment: datetime) -> Decimal:
    """What a finished trade held in one leg at ``moment``: its opening position while it was open; after its close
    (the tick's clock, read before its close orders went out), what its closing fills that the exchange executed
    after ``moment`` had not closed yet: a settlement between the tick's start and those fills is paid on it."""
    if trade.opened_at > moment:
        return Decimal(0)
    if trade.closed_at is None or moment < trade.closed_at:
        return trade.held_by_leg[leg]
    if moment - trade.closed_at >= LEASE_TTL:
        # No tick runs longer than its lease: a closing fill timed later is a fill model's (the paper exchange's
        # execution delay), whose position was closed when the order was placed.
        return Decimal(0)
    return trade.held_by_leg[leg] + sum((qty for at, qty in trade.closes_by_leg[leg] if at <= moment), Decimal(0))


def _first_unlisted(ctx: TradingContext, since: datetime, trades: list[PairTrade], late: list[PairTrade],
                    listed: list[FundingState]) -> datetime | None:
    """The first settlement in (since, now], less than ``FUNDING_OVERLAP`` ago, at which the trades held a position
    in a symbol (net over the trades opened before it, and for a finished trade not closed yet: the exchange's
    position) the exchange lists no payment for: the next tick reads it again. One older than that is reported and
    not waited for any longer (nothing was paid on it, or the exchange's position was not the trades'). No query:
    the trades' orders are loaded already."""
    paid = {(p.symbol, _settlement_of(p.settled_at)) for p in listed}
    held: dict[tuple[str, datetime], Decimal] = {}
    finished = {trade.pk for trade in late}
    for trade in [*trades, *late]:
        if trade.opened_at is None:
            continue
        for leg in LEGS:
            instrument = instrument_of(trade, leg)
            symbol = ctx.symbol(instrument)
            # an active trade holds what it holds now (as ``_attributed`` splits it), a finished one its opening
            net = None if trade.pk in finished else leg_net(orders_of(trade), leg)
            interval = funding_interval_minutes(instrument.funding_interval_minutes)
            for at in settlement_times(max(since, trade.opened_at), ctx.now, interval):
                qty = net if net is not None else _held_at(trade, leg, at)
                held[symbol, at] = held.get((symbol, at), Decimal(0)) + qty
    missing: dict[datetime, set[str]] = {}
    for (symbol, at), qty in held.items():
        if qty and (symbol, at) not in paid:
            missing.setdefault(at, set()).add(symbol)
    waited = ctx.now - FUNDING_OVERLAP
    for at, symbols in sorted(missing.items()):
        if at <= waited:
            ctx.events.append(f"no funding listed for {', '.join(sorted(symbols))} at {at:%Y-%m-%d %H:%M} UTC, "
                              f"held then: not waited for any longer")
        else:
            ctx.events.append(f"funding of {', '.join(sorted(symbols))} at {at:%Y-%m-%d %H:%M} UTC not listed by "
                              f"the exchange yet: read again next tick")
    return min((at for at in missing if at > waited), default=None)


def _settlement_of(moment: datetime) -> datetime:
    """The settlement a payment belongs to: every settlement falls on a whole hour (``FUNDING_GRID_MINUTES``)."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _update_trade_funding(ctx: TradingContext, trades: list[PairTrade]) -> None:
    """Each trade's funding from its recorded payments; a finished trade's realised PnL follows (and, through its
    save, the daily totals)."""
    totals = dict(FundingPayment.objects.filter(trade_id__in=[t.pk for t in trades]).values_list("trade_id")
                  .annotate(total=Sum("amount")).values_list("trade_id", "total"))
    active = []
    for trade in trades:
        before, trade.funding = trade.funding, totals[trade.pk]
        if trade.state not in PairTrade.FINAL_STATES:
            active.append(trade)
            continue
        if trade.realised_pnl is not None:
            trade.realised_pnl += trade.funding - before
        trade.save(update_fields=["funding", "realised_pnl"])
        ctx.events.append(f"trade {trade.pk}: funding {trade.funding - before:+.4f} recorded after it finished "
                          f"(not read, or not listed by the exchange yet, when it closed); realised PnL corrected")
    PairTrade.objects.bulk_update(active, ["funding"])  # one statement, not one per trade


def _not_recorded(ctx: TradingContext, payments: list[FundingState], since: datetime) -> list[FundingState]:
    """The payments not recorded yet, matched by the exchange's symbol for this account (the overlap reads some
    again)."""
    recorded = set()
    already = FundingPayment.objects.filter(account=ctx.account, settled_at__gte=since)
    for symbol, ccxt_symbol, settled_at in already.values_list("instrument__symbol", "instrument__ccxt_symbol",
                                                               "settled_at"):
        recorded.update({(symbol, settled_at), (ccxt_symbol, settled_at)})
    return [p for p in payments if (p.symbol, p.settled_at) not in recorded]


def _candidates(ctx: TradingContext, trades: list[PairTrade], late: list[PairTrade]):
    """By symbol: the trades that may have held a payment's position (active ones with what they hold now, finished
    ones with None: what they held is read at the settlement), and the legs active trades have closed (the trade,
    instrument, what it opened, by when its close had filled)."""
    by_symbol: dict[str, list[tuple[PairTrade, Instrument, str, Decimal | None]]] = {}
    closed_legs: dict[str, list[tuple[PairTrade, Instrument, Decimal, datetime]]] = {}
    for trade in trades:
        orders = orders_of(trade)
        for leg in LEGS:
            net = leg_net(orders, leg)
            instrument = instrument_of(trade, leg)
            if net:
                by_symbol.setdefault(ctx.symbol(instrument), []).append((trade, instrument, leg, net))
            elif (opening := _opening_net(orders, leg)) and (closed := _leg_closed_at(orders, leg)) is not None:
                # Closed since (a trade still closing its other leg): it held the leg at a settlement before its
                # close filled, and a payment listed late is read only now.
                closed_legs.setdefault(ctx.symbol(instrument), []).append((trade, instrument, opening, closed))
    for trade in late:
        for leg in LEGS:
            instrument = instrument_of(trade, leg)
            by_symbol.setdefault(ctx.symbol(instrument), []).append((trade, instrument, leg, None))
    return by_symbol, closed_legs


def _attributed(ctx: TradingContext, trades: list[PairTrade], late: list[PairTrade],
                payments: list[FundingState]) -> list[FundingPayment]:
    """A row per trade holding each payment's position (split by size, same direction only); a payment no trade
    explains is recorded without a trade when its instrument is known. An active trade holds what it holds now (a
    leg it has closed since, what it had opened, when no one holds the payment's position now and the leg's close
    filled after the settlement); a trade finished since a failed read holds what its fills held at the settlement."""
    by_symbol, closed_legs = _candidates(ctx, trades, late)
    holders_of = [_holders(by_symbol.get(p.symbol, []), p)
                  or [(t, instrument, opening) for t, instrument, opening, closed in closed_legs.get(p.symbol, [])
                      if opening * p.position_qty > 0 and p.settled_at < closed] for p in payments]
    unknown = _instruments_for_symbols(ctx, {p.symbol for p, h in zip(payments, holders_of, strict=True) if not h})
    rows = []
    for payment, holders in zip(payments, holders_of, strict=True):
        total = sum((abs(net) for _, _, net in holders), Decimal(0))
        if not holders or total == 0:
            if unknown.get(payment.symbol) is not None:
                rows.append(FundingPayment(account=ctx.account, trade=None, instrument=unknown[payment.symbol],
                                           settled_at=payment.settled_at, rate=payment.rate,
                                           position_qty=payment.position_qty, mark_price=payment.mark_price,
                                           amount=payment.amount))
            continue
        for trade, instrument, net in holders:
            share = abs(net) / total
            rows.append(FundingPayment(account=ctx.account, trade=trade, instrument=instrument,
                                       settled_at=payment.settled_at, rate=payment.rate, position_qty=net,
                                       mark_price=payment.mark_price,
                                       amount=(payment.amount * share).quantize(Decimal("1e-12"))))
    return rows


def _opening_net(orders: list[Order], leg: str) -> Decimal:
    """What a trade's fills opened on one leg: every fill but those of its closing orders."""
    return sum((signed(o.side, o.filled_qty) for o in orders if o.leg == leg and o.action not in CLOSING_ACTIONS),
               Decimal(0))


def _leg_closed_at(orders: list[Order], leg: str) -> datetime | None:
    """By when a leg's last closing order had filled: sent on the tick's clock, filled within the tick (which no
    lease outlasts)."""
    sent = [o.submitted_at for o in orders if o.leg == leg and o.action in CLOSING_ACTIONS and o.filled_qty
            and o.submitted_at is not None]
    return max(sent) + LEASE_TTL if sent else None


def _holders(candidates: list[tuple[PairTrade, Instrument, str, Decimal | None]],
             payment: FundingState) -> list[tuple[PairTrade, Instrument, Decimal]]:
    """The trades that held ``payment``'s position on its side (a finished trade: at its settlement)."""
    holders = []
    for trade, instrument, leg, net in candidates:
        if net is None:
            net = _held_at(trade, leg, payment.settled_at)
        if net * payment.position_qty > 0:
            holders.append((trade, instrument, net))
    return holders


def _settlement_between(since: datetime, until: datetime, trades: list[PairTrade]) -> bool:
    """Did any held instrument's funding settle in (since, until]? No trade, no funding to attribute."""
    intervals = {funding_interval_minutes(instrument_of(t, leg).funding_interval_minutes)
                 for t in trades for leg in LEGS}
    return any(settles_between(since, until, minutes) for minutes in intervals)


def _instruments_for_symbols(ctx: TradingContext, symbols: set[str]) -> dict[str, Instrument | None]:
    """The instruments of exchange symbols no trade holds (funding of a position the bot doesn't know), one query."""
    if not symbols:
        return {}
    found = Instrument.objects.filter(exchange=ctx.account.exchange).filter(Q(symbol__in=symbols)
                                                                            | Q(ccxt_symbol__in=symbols))
    by_symbol = {}
    for instrument in found:
        by_symbol[instrument.symbol] = by_symbol[instrument.ccxt_symbol] = instrument
    return {symbol: by_symbol.get(symbol) for symbol in symbols}
