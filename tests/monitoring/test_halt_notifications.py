"""Halts raised and cleared, and the kill switch, become notifications (after their commit)."""

from __future__ import annotations

import pytest

from notifications.models import Notification
from risk.models import Halt
from risk.services import halt_raise, halts_clear, kill_switch_engage, kill_switch_release
from tests.factories import ExchangeAccountFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_guard_halt_and_its_clearance_are_notified_once(django_user_model):
    account = ExchangeAccountFactory(name="lvl1")
    halt = halt_raise(account=account, source=Halt.Source.GUARD, reason="daily loss -3.1% over -3%",
                      trigger="daily_loss", mode=Halt.Mode.HALT)
    halt_raise(account=account, source=Halt.Source.GUARD, reason="daily loss -3.1% over -3%",
               trigger="daily_loss", mode=Halt.Mode.HALT)  # the same halt again: reused, no second message
    officer = django_user_model.objects.create_user(username="officer", password="a-long-test-password")
    halts_clear(halts=Halt.objects.filter(pk=halt.pk), cleared_by=officer)

    notes = list(Notification.objects.order_by("pk").values_list("topic", "severity", "text"))
    assert notes == [
        ("halt_raised", "critical", "Halted (no entries, no exits but stop-losses): lvl1\n"
                                    "reason: daily loss -3.1% over -3%\nby: Guard"),
        ("halt_cleared", "warning", "cleared: lvl1\nwas: daily loss -3.1% over -3%\nby: officer"),
    ]


def test_the_kill_switch_is_notified_with_flatten(django_user_model):
    account = ExchangeAccountFactory(name="lvl2")
    trader = django_user_model.objects.create_user(username="alice", password="a-long-test-password")
    kill_switch_engage(account=account, flatten=True, reason="exchange incident", user=trader)
    kill_switch_release(account=account, user=trader)
    topics = list(Notification.objects.order_by("pk").values_list("topic", flat=True))
    assert topics == ["kill_switch", "kill_switch_released"]
    assert "open trades are being closed (flatten)" in Notification.objects.get(topic="kill_switch").text
    assert "by: alice" in Notification.objects.get(topic="kill_switch").text


def test_a_bot_halt_lifted_by_the_bot_says_the_bot_lifted_it():
    """A reconciliation or stuck-trade halt is lifted by the bot once what stopped it is resolved: the message said
    "by: nobody (latch ended or the guard)", which sent the trader looking for a latch or a guard that did nothing."""
    account = ExchangeAccountFactory(name="lvl3")
    halt = halt_raise(account=account, source=Halt.Source.BOT, reason="reconciliation mismatch: YYY 6 != 5")
    halts_clear(halts=Halt.objects.filter(pk=halt.pk), cleared_by=None)
    text = Notification.objects.get(topic="halt_cleared").text
    assert text.endswith("by: Bot (reconciliation), once what stopped it was resolved"), text
