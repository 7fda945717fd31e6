"""The console channel: what the demo prints for each notification."""

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
