"""Funding the exchange lists some seconds after its settlement (execution/bot/funding.py), against the real ccxt
client and the fake Bybit v5 server (demo and real modes).

Bybit settles at 08:00 UTC but shows the payment in its execution list a little later: the bot's tick at 08:00:30
reads nothing for it. The watermark must stay before the settlement so that the next ticks read it again (a trade
that finishes meanwhile still gets it), for an hour at most, and the bot must not read funding on every tick
otherwise.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from execution.models import BotHeartbeat, DailyTradeTotals, FundingPayment, PairTrade, Signal
from tests.execution.bot.fault_world import exchange_of, tick

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class FundingListedLate:
    """The account's real adapter whose funding list doesn't show settlements at or after ``hidden_from`` (ms) yet
    (None: shows all); counts the funding reads."""

    def __init__(self, world, hidden_from: int | None = None):
        self._inner, self.hidden_from, self.reads = exchange_of(world), hidden_from, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def funding_payments(self, *, since_ms, until_ms, settle_coin="USDT"):
        self.reads += 1
        listed = self._inner.funding_payments(since_ms=since_ms, until_ms=until_ms, settle_coin=settle_coin)
        return [p for p in listed if self.hidden_from is None or p.time_ms < self.hidden_from]


def _held_into_the_8am_settlement(world, fake, *, last_bar: str = Signal.Action.HOLD):
    """A trade opened at 02:00 and still open at 08:00 (the last bar's signal: ``last_bar``), when both legs' funding
    settles on the exchange. Returns the settlement time and what the exchange charged (+ received)."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)  # opens at 02:00
    tick(world)
    while world.now.hour != 7:
        world.next_bar(action=Signal.Action.HOLD, position=1)
        tick(world)
    world.next_bar(action=last_bar, position=1 if last_bar == Signal.Action.HOLD else None)  # now: 08:00
    settled = world.now
    for symbol, rate in (("YYYUSDT", "0.001"), ("XXXUSDT", "-0.001")):
        fake.settle_funding(symbol, rate, time_ms=int(settled.timestamp() * 1000))
    charged = -sum(e.exec_fee for e in fake.executions() if e.exec_type == "Funding")
    assert charged != 0
    return settled, charged


def _heartbeat(world) -> BotHeartbeat:
    return BotHeartbeat.objects.get(account=world.account)


def test_funding_listed_after_the_first_tick_past_its_settlement_is_read_again(world, fake):
    settled, charged = _held_into_the_8am_settlement(world, fake)
    late = FundingListedLate(world, hidden_from=int(settled.timestamp() * 1000))
    report = world.tick(exchange=late, now=settled + timedelta(seconds=30))
    assert late.reads == 1 and not FundingPayment.objects.exists()
    held_back = _heartbeat(world)

    listed = FundingListedLate(world)  # a minute later the exchange lists it
    world.tick(exchange=listed, now=settled + timedelta(minutes=1, seconds=30))
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN and trade.funding == charged
    assert listed.reads == 1
    # the tick that read nothing for it kept the watermark before it, and said so
    assert held_back.funding_synced_until < settled and held_back.funding_unsynced_since == settled
    assert any("not listed by the exchange yet" in event for event in report.events), report.events
    heartbeat = _heartbeat(world)
    assert heartbeat.funding_synced_until == settled + timedelta(minutes=1, seconds=30)
    assert heartbeat.funding_unsynced_since is None
    for minutes in range(2, 60, 7):  # recorded: not read again for the rest of the hour
        world.tick(exchange=listed, now=settled + timedelta(minutes=minutes))
    assert listed.reads == 1

    world.next_bar(action=Signal.Action.EXIT)  # closes at 09:00
    tick(world)
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.funding == charged
    assert FundingPayment.objects.filter(trade=trade).count() == 2  # recorded once
    totals = DailyTradeTotals.objects.get(account=world.account, day=settled.date())
    assert totals.funding == charged and totals.pnl == trade.realised_pnl


def test_funding_listed_late_goes_to_the_trade_that_closed_before_it_was_listed(world, fake):
    settled, charged = _held_into_the_8am_settlement(world, fake, last_bar=Signal.Action.EXIT)
    late = FundingListedLate(world, hidden_from=int(settled.timestamp() * 1000))
    world.tick(exchange=late, now=settled + timedelta(seconds=30))  # reads nothing for 08:00, then closes the trade
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.funding == 0
    pnl_before = trade.realised_pnl
    assert not FundingPayment.objects.exists()

    world.next_bar(action=Signal.Action.HOLD, position=0)
    report = world.tick(exchange=FundingListedLate(world), now=settled + timedelta(minutes=1, seconds=30))
    trade.refresh_from_db()
    amounts = dict(FundingPayment.objects.filter(trade=trade).values_list("instrument__symbol", "amount"))
    assert set(amounts) == {"YYYUSDT", "XXXUSDT"} and not FundingPayment.objects.filter(trade__isnull=True).exists()
    assert trade.funding == sum(amounts.values()) == charged
    assert trade.realised_pnl == pnl_before + charged
    assert any("recorded after it finished" in event for event in report.events), report.events
    totals = DailyTradeTotals.objects.get(account=world.account, day=settled.date())
    assert totals.funding == charged and totals.pnl == trade.realised_pnl
    assert _heartbeat(world).funding_unsynced_since is None


def test_a_settlement_never_listed_is_read_again_for_an_hour_at_most(world, fake):
    settled, _ = _held_into_the_8am_settlement(world, fake)
    never = FundingListedLate(world, hidden_from=int(settled.timestamp() * 1000))
    reads = []
    for minutes in range(0, 71, 10):  # 08:00:30 to 09:10:30
        before = never.reads
        report = world.tick(exchange=never, now=settled + timedelta(minutes=minutes, seconds=30))
        reads.append(never.reads - before)
    # read again each tick within the hour, then once more to give up (reported), then no more
    assert reads == [1, 1, 1, 1, 1, 1, 1, 0]
    assert not FundingPayment.objects.exists()
    heartbeat = _heartbeat(world)
    assert heartbeat.funding_synced_until == settled + timedelta(hours=1, seconds=30)
    assert heartbeat.funding_unsynced_since is None
    world.next_bar(action=Signal.Action.HOLD, position=1)  # 09:00's bar: the watermark moved, nothing reported
    report = world.tick(exchange=never, now=settled + timedelta(hours=1, minutes=20))
    assert never.reads == 7 and not any("funding" in event for event in report.events), report.events


def test_a_trade_opened_after_the_settlement_waits_for_no_payment(world, fake):
    world.next_bar(action=Signal.Action.HOLD, position=0)
    while world.now.hour != 7:
        world.next_bar(action=Signal.Action.HOLD, position=0)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)  # now: 08:00; nothing held at the settlement
    settled = world.now
    exchange = FundingListedLate(world)
    world.tick(exchange=exchange, now=settled + timedelta(seconds=30))  # opens the trade
    assert world.trade().state == PairTrade.State.OPEN and exchange.reads == 0
    # an earlier trade's read left the watermark before the settlement: the next read covers it
    BotHeartbeat.objects.filter(account=world.account).update(funding_synced_until=settled - timedelta(hours=2))
    for minutes in range(1, 6):
        world.tick(exchange=exchange, now=settled + timedelta(minutes=minutes, seconds=30))
    assert exchange.reads == 1  # the settlement after the watermark read once: nothing paid, nothing waited for
    heartbeat = _heartbeat(world)
    assert heartbeat.funding_synced_until > settled and heartbeat.funding_unsynced_since is None


class SettlesBeforeTheClose(FundingListedLate):
    """The exchange settles 08:00's funding between the tick's start (07:59:50, the trade's close) and its close
    orders' fills: the position is still held at 08:00 and pays."""

    def __init__(self, world, fake, settled):
        super().__init__(world)
        self.fake, self.settled = fake, settled

    def place_order(self, **kwargs):
        if kwargs.get("reduce_only") and self.settled is not None:
            for symbol, rate in (("YYYUSDT", "0.001"), ("XXXUSDT", "-0.001")):
                self.fake.settle_funding(symbol, rate, time_ms=int(self.settled.timestamp() * 1000))
            self.settled = None
        return self._inner.place_order(**kwargs)


def test_funding_settled_while_the_close_orders_went_out_goes_to_the_closed_trade(world, fake):
    """A tick that starts at 07:59:50 closes the trade (its closed_at: the tick's clock) but its close orders fill
    after 08:00: the exchange charges 08:00's funding on the position. The next tick reads it; no trade is open any
    more, and the payment belongs to the trade that held the position then, whatever the tick's clock said."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)  # opens at 02:00
    tick(world)
    while world.now.hour != 7:
        world.next_bar(action=Signal.Action.HOLD, position=1)
        tick(world)
    world.next_bar(action=Signal.Action.EXIT)  # the exit signal comes at 07:00 and is acted on at 07:59:50
    settled = world.now + timedelta(hours=1)
    world.tick(exchange=SettlesBeforeTheClose(world, fake, settled), now=settled - timedelta(seconds=10))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.closed_at < settled
    charged = -sum(e.exec_fee for e in fake.executions() if e.exec_type == "Funding")
    assert charged != 0
    pnl_before = trade.realised_pnl

    world.next_bar(action=Signal.Action.HOLD, position=0)
    world.tick(exchange=FundingListedLate(world), now=settled + timedelta(seconds=50))
    trade.refresh_from_db()
    assert not FundingPayment.objects.filter(trade__isnull=True).exists()
    assert trade.funding == charged and trade.realised_pnl == pnl_before + charged
    # the exchange's wallet moved by the trade's realised PnL, to the last digit (the fixture's balance: 100000)
    assert fake.balance() - Decimal("100000") == trade.realised_pnl
    totals = DailyTradeTotals.objects.get(account=world.account, day=settled.date())
    assert totals.funding == charged and totals.pnl == trade.realised_pnl


def test_funding_of_a_leg_closed_before_its_payment_was_listed_goes_to_the_trade_still_closing(world, fake):
    """08:00's payment is listed late; the tick at 08:00:30 closes the y leg but its x close is refused. At the next
    read the trade is still closing and holds no y any more: y's payment is still the trade's (it held y at 08:00)."""
    settled, charged = _held_into_the_8am_settlement(world, fake, last_bar=Signal.Action.EXIT)
    fake.reject_next_order("XXXUSDT", 10001, "params error: not now")
    world.tick(exchange=FundingListedLate(world, hidden_from=int(settled.timestamp() * 1000)),
               now=settled + timedelta(seconds=30))
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSING
    world.next_bar(action=Signal.Action.HOLD, position=0)
    world.tick(exchange=FundingListedLate(world), now=settled + timedelta(minutes=1, seconds=30))
    trade.refresh_from_db()
    assert trade.state == PairTrade.State.CLOSED
    assert not FundingPayment.objects.filter(trade__isnull=True).exists()
    assert trade.funding == charged
    assert fake.balance() - Decimal("100000") == trade.realised_pnl
