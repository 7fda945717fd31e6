"""The guard and the kill switch on demo and real accounts, against the fake Bybit v5 server (loopback): the kill
switch flattens both legs, positions that differ from the trades and an unexplained balance change are caught."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from core.clock import ManualClock
from exchanges.retry import RetryingExchange
from execution.models import ExchangeAccount, PairTrade, Signal
from execution.selectors import account_credentials
from execution.venues import account_exchange
from monitoring.guard.control import accounts_halt
from monitoring.guard.cycle import guard_run
from pairs.market import StoredMarket
from risk.models import DailyPnlSnapshot
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
def world(request, fake, monkeypatch) -> BotWorld:
    monkeypatch.setenv("STATARB_CRED_T_KEY", "test-key")
    monkeypatch.setenv("STATARB_CRED_T_SECRET", "test-secret")
    return BotWorld(mode=request.param, base_url_override=fake.base_url, api_key_env="STATARB_CRED_T_KEY",
                    api_secret_env="STATARB_CRED_T_SECRET")


def exchange_of(world: BotWorld):
    return RetryingExchange(account_exchange(world.account, account_credentials(account=world.account)),
                            sleep=lambda s: None)


def guard(world: BotWorld):
    market = StoredMarket(timeframe="1h", clock=ManualClock(world.now))
    return guard_run(now=world.now, market=market, accounts=[world.account], live=False,
                     exchange_for=lambda account: exchange_of(world))


def positions(fake: FakeBybit, world: BotWorld) -> dict[str, Decimal]:
    return {p.symbol: p.qty for p in exchange_of(world).positions() if p.qty}


def test_the_kill_switch_flattens_a_demo_or_real_account_leaving_no_leg(world, fake):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick(exchange=exchange_of(world))
    assert world.trade().state == PairTrade.State.OPEN and len(positions(fake, world)) == 2
    accounts_halt(account=world.account, flatten=True, reason="exchange incident", user=None, channel="command",
                  actor_label="ops")
    world.next_bar(action=Signal.Action.HOLD, position=1)
    world.tick(exchange=exchange_of(world))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == PairTrade.ExitReason.GUARD_HALT
    assert positions(fake, world) == {}


def test_a_position_changed_by_hand_and_an_unexplained_balance_change_are_caught(world, fake):
    RiskLimitFactory(account=world.account, daily_loss_limit=None, balance_tolerance_pct=0.001,
                     actions={"position_mismatch": "halt", "balance": "reduce"})
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick(exchange=exchange_of(world))
    assert guard(world).breaches == []  # the first cycle remembers the exchange's equity

    fake.open_position_by_hand("YYYUSDT", "Buy", "1")
    fake.set_balance("USDT", "99000")  # a withdrawal, say: no trade, fee or funding explains it
    report = guard(world)
    assert sorted(b.check for b in report.breaches) == ["balance", "position_mismatch"]
    mismatch = next(b for b in report.breaches if b.check == "position_mismatch")
    assert "YYY/USDT:USDT: exchange 6, trades 5" in mismatch.message
    assert sorted((h.trigger, h.mode) for h in report.halts_raised) == [("balance", "reduce"),
                                                                        ("position_mismatch", "halt")]


def test_a_crash_within_the_hour_is_a_daily_loss_at_the_exchanges_marks_not_a_balance_anomaly(world, fake):
    """The candles close hourly, the guard runs every minute: a demo or real account's legs are marked at the
    exchange's mark prices, so a crash before the next candle is a daily loss now, and the balance check (the
    exchange's equity against the book's) sees nothing unexplained."""
    RiskLimitFactory(account=world.account, daily_loss_limit=Decimal("100"), balance_tolerance_pct=0.001)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick(exchange=exchange_of(world))
    y_held = world.trade().orders.get(leg="y").filled_qty
    assert guard(world).breaches == []

    fake.set_price("YYYUSDT", "75")  # the long y leg (5) loses 125; no candle has closed since
    later = world.now + timedelta(minutes=20)
    report = guard_run(now=later, market=StoredMarket(timeframe="1h", clock=ManualClock(later)),
                       accounts=[world.account], live=False, exchange_for=lambda account: exchange_of(world))
    assert [b.check for b in report.breaches] == ["daily_loss"], report.breaches
    snapshot = DailyPnlSnapshot.objects.get(account=world.account)
    assert snapshot.unrealised_pnl < -y_held * 25 + Decimal(1)  # y's drop is in the book, not only x's move
