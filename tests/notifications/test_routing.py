"""Routing settings: destinations and the lowest severity each receives."""

from __future__ import annotations

import pytest

from notifications.routing import parse_targets, routes_for


def test_parse_targets_reads_severities_and_defaults_to_info():
    assert parse_targets("-100123:info, 424242:critical,777", setting="X") == [
        ("-100123", "info"), ("424242", "critical"), ("777", "info")]
    assert parse_targets("desk@example.com:warning", setting="X") == [("desk@example.com", "warning")]
    assert parse_targets("", setting="X") == []


@pytest.mark.parametrize("spec", ["-100123:urgent", ":info"])
def test_a_typo_is_an_error_not_a_silent_drop(spec):
    with pytest.raises(ValueError, match="TELEGRAM_CHAT_IDS"):
        parse_targets(spec, setting="TELEGRAM_CHAT_IDS")


def test_routes_for_a_severity(settings):
    settings.TELEGRAM_BOT_TOKEN = "123456:token-for-routing"
    settings.TELEGRAM_CHAT_IDS = "1:info,2:warning,3:critical"
    settings.NOTIFY_EMAIL_TO = "a@example.com:critical"
    settings.NOTIFY_LOG_SEVERITY = "warning"
    assert [(r.channel, r.target) for r in routes_for("info")] == [("telegram", "1")]
    assert [(r.channel, r.target) for r in routes_for("warning")] == [
        ("telegram", "1"), ("telegram", "2"), ("log", "statarb.notifications")]
    assert len(routes_for("critical")) == 5


@pytest.mark.django_db
def test_a_typo_never_breaks_what_it_reports_and_the_check_names_it(settings, caplog):
    """notify() runs inside the transaction of the event it reports (a trade opened, a halt): a mistyped setting
    must not raise there. The destination gets everything, the log says what is wrong, and manage.py check fails."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from notifications.models import Delivery
    from notifications.services import notify

    settings.TELEGRAM_BOT_TOKEN = "123456:token-for-routing"
    settings.TELEGRAM_CHAT_IDS = "424242:Critical,777:warning"
    settings.NOTIFY_LOG_SEVERITY = "warn"
    notification = notify(topic="trade_opened", text="trade 1 opened", severity="info")
    targets = set(Delivery.objects.filter(notification=notification).values_list("channel", "target"))
    assert targets == {("telegram", "424242"), ("log", "statarb.notifications")}
    assert "unknown severity in '424242:Critical'" in caplog.text and "'warn' is none of" in caplog.text
    with pytest.raises(SystemCheckError, match=r"notifications\.E001"):
        call_command("check")
