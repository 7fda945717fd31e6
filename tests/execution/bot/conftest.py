"""Fixtures of the bot's fault tests: the fake Bybit v5 server, and a world on it in demo and in real mode (a test
module may define its own ``world``, which then wins)."""

from __future__ import annotations

import pytest

from execution.models import ExchangeAccount
from tests.execution.bot_world import BotWorld
from tests.fakes.bybit import FakeBybit


@pytest.fixture
def fake():
    with FakeBybit(timeout_delay_s=1.5, balance="100000") as server:
        server.add_instrument("YYYUSDT", base="YYY", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="100")
        server.add_instrument("XXXUSDT", base="XXX", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="50")
        yield server
    assert server.errors == []


@pytest.fixture(params=[ExchangeAccount.Mode.DEMO, ExchangeAccount.Mode.REAL])
def world(request, fake) -> BotWorld:
    world = BotWorld(mode=request.param, base_url_override=fake.base_url)
    return world


