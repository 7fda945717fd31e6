"""``manage.py send_notifications``: drains once, exits non-zero when something is left failing."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from notifications.models import Delivery
from notifications.services import notify
from tests.fakes.telegram import ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db


def test_it_sends_and_exits_zero_when_all_went_out(telegram, capsys):
    notify(topic="trade_closed", text="BTC/ETH closed +12.5 USDT")
    call_command("send_notifications", "--budget", "5")
    assert "sent 2" in capsys.readouterr().out
    assert len(telegram.delivered(ALERTS_CHAT_ID)) == 1


def test_it_exits_non_zero_while_telegram_is_down(telegram):
    notify(topic="trade_closed", text="BTC/ETH closed")
    # a budget shorter than the first backoff (1-2 s): one attempt, then the command reports the delivery retrying
    with telegram.outage("http_502"), pytest.raises(CommandError, match="left failing"):
        call_command("send_notifications", "--budget", "0.5")
    row = Delivery.objects.get(channel="telegram")
    assert row.status == Delivery.Status.PENDING and row.attempts == 1 and row.last_error.startswith("HTTP 502")
