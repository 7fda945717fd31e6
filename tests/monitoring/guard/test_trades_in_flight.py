"""The guard's position check against a bot that is trading at the same moment, on the fake Bybit v5 server through
the real ccxt client: a leg whose order the bot has sent but not yet accounted for (its answer lost, its fills not
written yet), or a trade that changed while the guard read the exchange, is no difference between the exchange and
the trades. Raised on it, the position check's halt (mode halt, until a person clears it) froze the account's exits
after a timeout the bot settles by itself a tick later, and a race with the bot's own closes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import ManualClock
from execution.models import ExchangeAccount, Order, PairTrade, Signal
from monitoring.guard.cycle import guard_run
from monitoring.guard.exchange_reads import IN_FLIGHT_GRACE
from pairs.market import StoredMarket
from risk.models import Halt
from tests.execution.bot.fault_world import CREATE, assert_consistent, exchange_of, lag_order_lookups, tick
from tests.execution.bot_world import BotWorld
from tests.factories import RiskLimitFactory
from tests.fakes.bybit import FakeBybit

pytestmark = pytest.mark.django_db


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
    RiskLimitFactory(account=world.account)  # the defaults: a position difference halts (until cleared)
    return world


def guard(world: BotWorld, *, before_the_exchange=None, at=None):
    """A cycle at ``at`` (default: the world's clock); ``before_the_exchange`` runs after the guard read the books
    and before it reads the exchange (what a bot does meanwhile)."""
    def exchange_for(account):
        if before_the_exchange is not None:
            before_the_exchange()
        return exchange_of(world)

    at = at or world.now
    market = StoredMarket(timeframe="1h", clock=ManualClock(at))
    return guard_run(now=at, market=market, accounts=[world.account], live=False, exchange_for=exchange_for)


def test_a_leg_whose_answer_was_lost_is_no_position_difference_while_the_bot_settles_it(world, fake, monkeypatch):
    """The y open's answer is lost and the order lists lag (two look-ups find nothing): the exchange holds y, the
    trades don't know it yet. The bot finds the order a tick later and completes the hedge by itself."""
    lag_order_lookups(monkeypatch, client_id_suffix="yo1", times=2)
    fake.timeout_after_accept_next(CREATE, symbol="YYYUSDT")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert Order.objects.get(trade=world.trade(), leg="y").status == Order.Status.UNKNOWN
    assert world.trade().state == PairTrade.State.OPENING and fake.position("YYYUSDT").size == 5

    report = guard(world)
    assert [b.check for b in report.breaches if b.check == "position_mismatch"] == []
    assert not Halt.objects.exists()
    # Not forever: a trade stuck in flight past the bot's longest grace is a difference again.
    late = guard(world, at=world.now + IN_FLIGHT_GRACE + timedelta(minutes=1))
    assert "position_mismatch" in [b.check for b in late.breaches]
    Halt.objects.all().delete()

    for minutes in (1, 2):
        tick(world, now=world.now + timedelta(minutes=minutes))
    assert world.trade().state == PairTrade.State.OPEN  # the bot found its order and completed the hedge
    assert_consistent(world, fake)
    assert guard(world).breaches == []


def test_a_trade_the_bot_closes_while_the_guard_reads_the_exchange_is_no_position_difference(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert world.trade().state == PairTrade.State.OPEN
    assert guard(world).breaches == []

    def bot_closes():
        world.next_bar(action=Signal.Action.EXIT, zscore=-0.1, position=0)
        tick(world)

    report = guard(world, before_the_exchange=bot_closes)
    assert world.trade().state == PairTrade.State.CLOSED and fake.positions() == {}
    assert [b.check for b in report.breaches if b.check == "position_mismatch"] == []
    assert not Halt.objects.exists()


def test_a_position_changed_by_hand_beside_a_settled_trade_still_halts(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    tick(world)
    assert guard(world).breaches == []
    fake.open_position_by_hand("XXXUSDT", "Sell", "1")
    report = guard(world)
    assert [b.check for b in report.breaches] == ["position_mismatch"]
    assert [(h.trigger, h.mode) for h in report.halts_raised] == [("position_mismatch", "halt")]
