"""The channels: what the demo prints for each notification, and Telegram's answers the Telegram channel meets."""

from __future__ import annotations

import pytest

from notifications.channels import ConsoleChannel, Message, console_lines


def test_a_console_line_names_severity_and_topic_and_indents_further_lines():
    text = console_lines(Message("trade_closed", "warning", "BTC/ETH closed\npnl -3.20 USDT\nfees 0.40"))
    assert text == "[warning] trade_closed: BTC/ETH closed\n    pnl -3.20 USDT\n    fees 0.40"


def test_an_empty_text_still_makes_a_line():
    assert console_lines(Message("worker_started", "info", "")) == "[info] worker_started: "


def test_the_console_channel_writes_through_the_given_function_and_reports_sent():
    written = []
    outcome = ConsoleChannel(write=written.append).send("console", Message("guard_halt", "critical", "halted"))
    assert outcome.sent and outcome.parts_sent == 1
    assert written == ["[critical] guard_halt: halted"]


def test_by_default_it_prints_to_stdout(capsys):
    ConsoleChannel().send("console", Message("guard_halt", "critical", "halted"))
    assert capsys.readouterr().out == "[critical] guard_halt: halted\n"


@pytest.mark.django_db
def test_secrets_are_masked_on_the_console(settings):
    settings.TELEGRAM_BOT_TOKEN = "123456:AAH-secret-token-value-abcdefghijkl"
    written = []
    ConsoleChannel(write=written.append).send(
        "console", Message("error", "warning", f"call failed: {settings.TELEGRAM_BOT_TOKEN}"))
    assert settings.TELEGRAM_BOT_TOKEN not in written[0] and "***" in written[0]


def test_a_mail_server_that_never_answers_is_given_up_on_within_the_timeout(settings):
    """A server that accepts the connection and never greets: without a timeout the one sender (and every Telegram
    alert queued behind the e-mail) would wait for good."""
    import socket
    import time

    from notifications.channels import EmailChannel

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
    settings.EMAIL_TIMEOUT = 1.0
    started = time.monotonic()
    try:
        outcome = EmailChannel().send("desk@example.com", Message("guard_halt", "critical", "halted"))
    finally:
        silent.close()
    assert outcome.kind == "retry" and "timed out" in outcome.reason, outcome
    assert time.monotonic() - started < 5


def test_the_mail_timeout_is_set_by_default():
    from django.conf import settings

    assert settings.EMAIL_TIMEOUT == 10.0


@pytest.mark.django_db
def test_a_group_upgraded_to_a_supergroup_still_gets_its_alerts_and_the_log_says_what_to_fix(telegram, settings,
                                                                                             caplog):
    """Telegram answers 400 with migrate_to_chat_id for a group upgraded to a supergroup and never takes a message for
    the old id again: giving up there lost every alert of the desk's group until someone noticed."""
    from notifications.models import Delivery
    from notifications.sender import notifications_send
    from notifications.services import notify

    settings.TELEGRAM_CHAT_IDS = "-4001:info"
    telegram.add_chat(-4001, "desk", chat_type="group")
    telegram.migrate_chat(-4001, -1004001)
    notify(topic="trade_opened", text="first")
    notify(topic="guard_halt", text="second", severity="critical")
    with caplog.at_level("ERROR", logger="statarb.notifications"):
        notifications_send(budget_s=5)

    assert [m.plain_text.splitlines()[1] for m in telegram.delivered(-1004001)] == ["first", "second"]
    rows = Delivery.objects.filter(target="-4001").order_by("id")
    assert [row.status for row in rows] == [Delivery.Status.SENT, Delivery.Status.SENT]
    assert all("replace -4001 with -1004001 in TELEGRAM_CHAT_IDS" in row.last_error for row in rows)
    assert "upgraded to the supergroup -1004001" in caplog.text
