"""The daily summary notification of each account (beat: 00:05 UTC, for the day that just ended).

Its numbers are the day's PnL snapshot (written by the guard's book, ``monitoring.guard.cycle.snapshots_write``),
the same the dashboard and the API show: realised PnL of the trades closed that day, already net of fees and
funding, and the equity marked to market at the day's end.
"""

from __future__ import annotations

from datetime import date

from django.db import transaction

from core.formatting import plain
from execution.models import ExchangeAccount, PairTrade
from notifications.models import Notification
from notifications.services import notify
from risk.models import DailyPnlSnapshot
from risk.selectors import active_halts


def daily_summary_text(*, account: ExchangeAccount, day: date) -> str:
    snapshot = DailyPnlSnapshot.objects.filter(account=account, date=day).first()
    open_trades = PairTrade.objects.filter(account=account, state__in=PairTrade.ACTIVE_STATES).count()
    halts = list(active_halts(account=account).values_list("reason", flat=True)[:3])
    lines = [f"[{account.name}] {day.isoformat()} (UTC)"]
    if snapshot is None:
        lines.append(f"no PnL snapshot of that day; open trades now {open_trades}")
    else:
        lines += [
            f"trades opened {snapshot.trades_opened}, closed {snapshot.trades_closed}, open now {open_trades}",
            f"realised PnL {plain(snapshot.realised_pnl)} USDT (net of fees {plain(snapshot.fees)} and funding "
            f"{plain(snapshot.funding)}), unrealised {plain(snapshot.unrealised_pnl)}",
            f"equity {plain(snapshot.starting_equity)} -> {plain(snapshot.ending_equity)} USDT, drawdown "
            f"{100 * snapshot.drawdown:.2f}%",
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
