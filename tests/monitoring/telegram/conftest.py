import pytest

from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID, fake_telegram  # noqa: F401


@pytest.fixture
def telegram_settings(fake_telegram, settings):  # noqa: F811 (the fixture imported above)
    """The bot pointed at the fake Telegram: alerts to one chat, critical ones and commands from alice's chat."""
    settings.TELEGRAM_BOT_TOKEN = fake_telegram.token
    settings.TELEGRAM_API_URL = fake_telegram.base_url
    settings.TELEGRAM_CHAT_IDS = f"{ALERTS_CHAT_ID}:info,{ADMIN_CHAT_ID}:critical"
    settings.TELEGRAM_USERS = f"{ADMIN_CHAT_ID}:alice"
    fake_telegram.set_rate_limits(enabled=False)
    return settings
