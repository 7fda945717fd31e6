"""The daily summary notification of each account (beat: 00:05 UTC, for the day that just ended).

Its numbers are the PnL snapshot's (``daily_pnl_snapshot_update``), the same the dashboard shows: realised PnL of
the trades closed that day, already net of fees and funding.
"""

from __future__ import annotations

from datetime import date

from django.db import transaction

from core.formatting import cents_text
from execution.models import ExchangeAccount, PairTrade
from monitoring.services import daily_pnl_snapshot_update
from notifications.models import Notification
from notifications.services import notify
from risk.selectors import active_halts


def daily_summary_text(*, account: ExchangeAccount, day: date) -> str:
    snapshot = daily_pnl_snapshot_update(account=account, day=day)
    open_trades = PairTrade.objects.filter(account=account, state__in=PairTrade.ACTIVE_STATES).count()
    halts = list(active_halts(account=account).values_list("reason", flat=True)[:3])
    lines = [
        f"[{account.name}] {day.isoformat()} (UTC)",
        f"trades opened {snapshot.trades_opened}, closed {snapshot.trades_closed}, open now {open_trades}",
        f"realised PnL {cents_text(snapshot.realised_pnl)} USDT (net of fees {cents_text(snapshot.fees)} and funding "
        f"{cents_text(snapshot.funding)})",
        f"equity {cents_text(snapshot.starting_equity)} -> {cents_text(snapshot.ending_equity)} USDT",
    ]
    lines.append(f"halted: {'; '.join(halts)}" if halts else "no halt")
    return "\n".join(lines)


def daily_summaries_notify(*, day: date) -> int:
    """Queue the summary of ``day`` for every enabled account, once per account and day (dedupe key)."""
    count = 0
    for account in ExchangeAccount.objects.filter(enabled=True).order_by("pk"):
        with transaction.atomic():
            created = notify(topic="daily_summary", text=daily_summary_text(account=account, day=day),
                             severity=Notification.Severity.INFO,
                             dedupe_key=f"daily_summary:{account.pk}:{day.isoformat()}")  # fmt: skip
        count += created is not None
    return count
