"""The daily summary notification of each account."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from monitoring.summaries import daily_summaries_notify
from monitoring.tasks import notify_daily_summaries
from notifications.models import Notification
from tests.factories import DailyPnlSnapshotFactory, ExchangeAccountFactory, HaltFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

DAY = date(2026, 3, 2)


def test_each_enabled_account_gets_one_summary_of_the_days_snapshot():
    account = ExchangeAccountFactory(name="level-1")
    ExchangeAccountFactory(name="off", enabled=False)
    DailyPnlSnapshotFactory(account=account, date=DAY, starting_equity=Decimal("10000"),
                            ending_equity=Decimal("10012.5"), peak_equity=Decimal("10020"),
                            realised_pnl=Decimal("12.5"), unrealised_pnl=Decimal("-3"), fees=Decimal("1.25"),
                            funding=Decimal("-0.5"), trades_opened=2, trades_closed=1, drawdown=0.00075)
    PairTradeFactory(account=account, state="open")
    HaltFactory(account=account, reason="daily loss limit")

    assert daily_summaries_notify(day=DAY) == 1
    assert daily_summaries_notify(day=DAY) == 0  # once per account and day

    note = Notification.objects.get(topic="daily_summary")
    assert note.dedupe_key == f"daily_summary:{account.pk}:2026-03-02"
    assert note.text.splitlines() == [
        "[level-1] 2026-03-02 (UTC)",
        "trades opened 2, closed 1, open now 1",
        "realised PnL 12.5 USDT (net of fees 1.25 and funding -0.5), unrealised -3",
        "equity 10000 -> 10012.5 USDT, drawdown 0.07%",
        "halted: daily loss limit",
    ]


def test_the_task_closes_the_days_snapshot_first():
    account = ExchangeAccountFactory(name="level-1")
    assert notify_daily_summaries(DAY.isoformat()) == 1
    text = Notification.objects.get(topic="daily_summary", dedupe_key=f"daily_summary:{account.pk}:2026-03-02").text
    assert text.splitlines()[1] == "trades opened 0, closed 0, open now 0"
    assert "equity 10000 -> 10000 USDT" in text
