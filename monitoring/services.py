"""Writes of monitoring: the daily PnL snapshots of the accounts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Sum

from execution.models import ExchangeAccount, PairTrade
from risk.models import DailyPnlSnapshot


@transaction.atomic
def daily_pnl_snapshot_update(*, account: ExchangeAccount, day: date) -> DailyPnlSnapshot:
    """Write (or rewrite) an account's snapshot for one UTC day from its trades; safe to run any number of times.

    Starting equity is the previous snapshot's ending equity, or the account's capital for its first day;
    realised PnL counts trades closed that day (already net of fees and funding). Unrealised PnL of trades
    still open is left to the mark-to-market of the execution layer and stays 0 here.
    """
    day_start = datetime.combine(day, time.min, tzinfo=UTC)
    day_end = day_start + timedelta(days=1)
    previous = (
        DailyPnlSnapshot.objects.filter(account=account, date__lt=day).order_by("-date").first()
    )
    starting_equity = previous.ending_equity if previous else account.capital
    previous_peak = previous.peak_equity if previous else account.capital
    # Failed and unwound trades count too: unwinding a lone leg costs real money.
    closed = PairTrade.objects.filter(
        account=account, state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False,
        closed_at__gte=day_start, closed_at__lt=day_end,
    )
    totals = closed.aggregate(pnl=Sum("realised_pnl"), fees=Sum("fees"), funding=Sum("funding"), n=Count("id"))
    realised = totals["pnl"] or Decimal(0)
    ending_equity = starting_equity + realised
    opened = PairTrade.objects.filter(account=account, opened_at__gte=day_start, opened_at__lt=day_end).count()
    snapshot, _ = DailyPnlSnapshot.objects.update_or_create(
        account=account,
        date=day,
        defaults={
            "starting_equity": starting_equity,
            "ending_equity": ending_equity,
            "realised_pnl": realised,
            "fees": totals["fees"] or Decimal(0),
            "funding": totals["funding"] or Decimal(0),
            "trades_opened": opened,
            "trades_closed": totals["n"],
            "peak_equity": max(previous_peak, ending_equity),
        },
    )
    return snapshot


def daily_pnl_snapshots_update(*, day: date) -> int:
    """Snapshot every enabled account for ``day``; each account in its own transaction."""
    accounts = ExchangeAccount.objects.filter(enabled=True)
    for account in accounts:
        daily_pnl_snapshot_update(account=account, day=day)
    return len(accounts)
