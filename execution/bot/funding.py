"""Funding settled on the trades' positions, read from the exchange and split over the trades holding each symbol."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q, Sum

from exchanges.errors import ExchangeError
from exchanges.types import FundingState
from execution.bot.book import instrument_of, orders_of
from execution.models import BotHeartbeat, FundingPayment, PairTrade
from execution.services.context import TradingContext
from execution.services.orders import LEGS, leg_net
from pairs.marketdata.funding import funding_interval_minutes, settles_between
from pairs.models import Instrument

FUNDING_OVERLAP = timedelta(hours=1)


def sync_funding(ctx: TradingContext, trades: list[PairTrade], heartbeat: BotHeartbeat) -> int:
    """Record funding settled since the last sync, split over the trades holding each symbol by their size."""
    opened = [t.opened_at for t in trades if t.opened_at]
    if not opened:
        return 0  # nothing held: no funding to attribute
    # Funding before the oldest trade opened concerns none of them (and a long idle spell needs no reading).
    since = max(heartbeat.funding_synced_until or min(opened), min(opened) - FUNDING_OVERLAP)
    if since >= ctx.now or not _settlement_between(since, ctx.now, trades):
        return 0
    # Read an hour back again: a settlement the exchange listed late is caught; one already recorded is skipped.
    since = since - FUNDING_OVERLAP
    since_ms, until_ms = int(since.timestamp() * 1000) + 1, int(ctx.now.timestamp() * 1000)
    try:
        payments = ctx.exchange.funding_payments(since_ms=since_ms, until_ms=until_ms)
    except ExchangeError as exc:
        ctx.events.append(f"funding not synced this tick: {exc}")
        return 0
    payments = _not_recorded(ctx, payments, since)
    rows = _attributed(ctx, trades, payments)
    touched = {row.trade_id for row in rows if row.trade_id is not None}
    with transaction.atomic():
        ctx.hold_lease()
        FundingPayment.objects.bulk_create(rows, ignore_conflicts=True)
        if touched:
            totals = dict(FundingPayment.objects.filter(trade_id__in=touched).values_list("trade_id")
                          .annotate(total=Sum("amount")).values_list("trade_id", "total"))
            changed = [trade for trade in trades if trade.pk in totals]
            for trade in changed:
                trade.funding = totals[trade.pk]
            PairTrade.objects.bulk_update(changed, ["funding"])  # one statement, not one per trade
        BotHeartbeat.objects.filter(pk=heartbeat.pk).update(funding_synced_until=ctx.now)
    return len(rows)


def _not_recorded(ctx: TradingContext, payments: list[FundingState], since: datetime) -> list[FundingState]:
    """The payments not recorded yet, matched by the exchange's symbol for this account (the overlap reads some
    again)."""
    recorded = set()
    already = FundingPayment.objects.filter(account=ctx.account, settled_at__gte=since)
    for symbol, ccxt_symbol, settled_at in already.values_list("instrument__symbol", "instrument__ccxt_symbol",
                                                               "settled_at"):
        recorded.update({(symbol, settled_at), (ccxt_symbol, settled_at)})
    return [p for p in payments if (p.symbol, p.settled_at) not in recorded]


def _attributed(ctx: TradingContext, trades: list[PairTrade], payments: list[FundingState]) -> list[FundingPayment]:
    """A row per trade holding each payment's position (split by size, same direction only); a payment no trade
    explains is recorded without a trade when its instrument is known."""
    by_symbol: dict[str, list[tuple[PairTrade, Instrument, Decimal]]] = {}
    for trade in trades:
        for leg in LEGS:
            net = leg_net(orders_of(trade), leg)
            if net:
                instrument = instrument_of(trade, leg)
                by_symbol.setdefault(ctx.symbol(instrument), []).append((trade, instrument, net))
    holders_of = [[h for h in by_symbol.get(p.symbol, []) if h[2] * p.position_qty > 0] for p in payments]
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
