"""The daily summary notification of each account."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from monitoring.summaries import daily_summaries_notify
from notifications.models import Notification
from tests.factories import ExchangeAccountFactory, HaltFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

DAY = date(2026, 3, 2)


def test_each_enabled_account_gets_one_summary_of_the_day_net_of_fees_and_funding():
    account = ExchangeAccountFactory(name="level-1")
    ExchangeAccountFactory(name="off", enabled=False)
    closed_at = datetime(2026, 3, 2, 14, tzinfo=UTC)
    PairTradeFactory(account=account, state="closed", opened_at=closed_at, closed_at=closed_at,
                     realised_pnl=Decimal("12.5"), fees=Decimal("1.25"), funding=Decimal("-0.5"))
    PairTradeFactory(account=account, state="open", opened_at=closed_at)
    HaltFactory(account=account, reason="daily loss limit")

    assert daily_summaries_notify(day=DAY) == 1
    assert daily_summaries_notify(day=DAY) == 0  # once per account and day

    note = Notification.objects.get(topic="daily_summary")
    assert note.dedupe_key == f"daily_summary:{account.pk}:2026-03-02"
    assert note.text.splitlines() == [
        "[level-1] 2026-03-02 (UTC)",
        "trades opened 2, closed 1, open now 1",
        "realised PnL 12.5 USDT (net of fees 1.25 and funding -0.5)",
        "equity 10000 -> 10012.5 USDT",
        "halted: daily loss limit",
    ]


def test_the_figures_are_written_to_the_cent_as_every_other_message_writes_them():
    """The snapshot keeps nine decimals: "realised PnL 17.111377035 USDT (net of fees 1.018322965 ...)" on the phone,
    beside a trade_closed of "PnL 17.11" for the same trade."""
    account = ExchangeAccountFactory(name="level-1")
    closed_at = datetime(2026, 3, 2, 14, tzinfo=UTC)
    PairTradeFactory(account=account, state="closed", opened_at=closed_at, closed_at=closed_at,
                     realised_pnl=Decimal("17.111377035"), fees=Decimal("1.018322965"), funding=Decimal("-0.004"))
    daily_summaries_notify(day=DAY)
    assert Notification.objects.get(topic="daily_summary").text.splitlines()[2:4] == [
        "realised PnL 17.11 USDT (net of fees 1.02 and funding 0)",
        "equity 10000 -> 10017.11 USDT",
    ]


def test_half_a_cent_is_rounded_up_as_the_dashboard_rounds_it():
    """Decimal's round() goes half to even: a day's fees of 1.925 (0.055 % of a 3,500 notional) read 1.92 in the
    summary and 1.93 on the dashboard's daily PnL table (Django's floatformat rounds half up)."""
    from django.template.defaultfilters import floatformat

    account = ExchangeAccountFactory(name="level-1")
    closed_at = datetime(2026, 3, 2, 14, tzinfo=UTC)
    PairTradeFactory(account=account, state="closed", opened_at=closed_at, closed_at=closed_at,
                     realised_pnl=Decimal("120.505"), fees=Decimal("1.925"), funding=Decimal("-0.125"))
    daily_summaries_notify(day=DAY)
    assert [floatformat(Decimal(v), 2) for v in ("120.505", "1.925", "-0.125")] == ["120.51", "1.93", "-0.13"]
    assert Notification.objects.get(topic="daily_summary").text.splitlines()[2] == \
        "realised PnL 120.51 USDT (net of fees 1.93 and funding -0.13)"
