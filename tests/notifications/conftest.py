"""The notification tests send to the fake Telegram Bot API on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID, fake_telegram  # noqa: F401


@pytest.fixture
def telegram(fake_telegram, settings):  # noqa: F811
    """Settings pointing at the fake: alerts chat takes everything, the operator's private chat critical only; no
    spacing between sends and the fake's flood limits off (tests that check the limits turn them back on)."""
    settings.TELEGRAM_BOT_TOKEN = fake_telegram.token
    settings.TELEGRAM_API_URL = fake_telegram.base_url
    settings.TELEGRAM_CHAT_IDS = f"{ALERTS_CHAT_ID}:info,{ADMIN_CHAT_ID}:critical"
    settings.TELEGRAM_MIN_INTERVAL_S = 0.0
    settings.NOTIFY_LOG_SEVERITY = "info"
    settings.NOTIFY_EMAIL_TO = ""
    fake_telegram.set_rate_limits(enabled=False)
    return fake_telegram
