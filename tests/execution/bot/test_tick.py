"""The bot engine end to end against the paper exchange: open, hold, close for every reason, limits and halts."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from execution.bot import lease, tick
from execution.models import BotHeartbeat, Fill, FundingPayment, Order, PairTrade, Signal
from execution.services.manual import trade_request_close
from notifications.models import Notification
from pairs.models import Level
from risk.models import Halt
from tests.execution.bot_world import BotWorld
from tests.factories import HaltFactory, InstrumentFactory, PairFactory, RiskLimitFactory

pytestmark = pytest.mark.django_db
Reason = PairTrade.ExitReason


@pytest.fixture
def world() -> BotWorld:
    return BotWorld()


def test_entry_signal_opens_both_legs_sized_from_hedge_ratio_and_budget(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = world.tick()
    assert report.status == "ok", report
    assert report.opened == 1 and report.reconciled
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN and trade.side == PairTrade.Side.LONG_SPREAD
    # budget 500 per leg, beta 0.85: y gets 500 (5.00 at 100), x gets 425 (8.50 at 50); rounded down to 0.01
    assert (trade.y_qty, trade.x_qty) == (Decimal("5"), Decimal("8.5"))
    orders = {o.leg: o for o in trade.orders.all()}
    assert (orders["y"].side, orders["x"].side) == ("buy", "sell")
    assert all(o.status == Order.Status.FILLED and o.filled_qty == o.qty for o in orders.values())
    assert len(orders["y"].client_order_id) <= 36 and orders["y"].client_order_id != orders["x"].client_order_id
    slip = Decimal(str(world.config.slippage))
    y_fill = Fill.objects.get(order=orders["y"])
    assert y_fill.price == Decimal("100") * (1 + slip)
    assert BotWorld.paper_positions(world.account) == {"YYYUSDT": Decimal("5"), "XXXUSDT": Decimal("-8.5")}
    assert Notification.objects.filter(topic="trade_opened").count() == 1
    heartbeat = BotHeartbeat.objects.get(account=world.account)
    assert heartbeat.lease_owner == "bot-1" and heartbeat.open_trades == 1 and heartbeat.reconciled_at


def test_both_legs_are_sized_and_the_trade_recorded_with_the_signals_hedge_ratio(world):
    # The pair's (screening) hedge ratio is 0.85; the signal's spread was computed with the rolling fit's -0.4.
    signal_at = world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2, hedge_ratio=-0.4)
    report = world.tick()
    assert report.opened == 1, report
    trade = world.trade()
    signal = Signal.objects.get(pair=world.pair, bar_time=signal_at)
    assert trade.entry_signal_id == signal.pk
    assert trade.hedge_ratio == signal.hedge_ratio == -0.4
    # budget 500 per leg: y 500 at 100 = 5; x |-0.4| * 500 = 200 at 50 = 4; a negative beta puts x on y's side
    assert (trade.y_qty, trade.x_qty) == (Decimal("5"), Decimal("4"))
    orders = {o.leg: o for o in trade.orders.all()}
    assert (orders["y"].side, orders["x"].side) == ("buy", "buy")


def test_a_signal_without_a_recorded_hedge_ratio_falls_back_to_the_pairs(world):
    world.next_bar(action=Signal.Action.ENTER_SHORT, zscore=2.2)
    world.tick()
    trade = world.trade()
    assert trade.hedge_ratio == world.pair.hedge_ratio == 0.85
    assert (trade.y_qty, trade.x_qty) == (Decimal("5"), Decimal("8.5"))


def test_tick_is_idempotent_and_signal_is_never_traded_twice(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    world.tick()
    world.tick(owner="bot-1")
    assert len(world.trades()) == 1
    assert Order.objects.count() == 2


def test_exit_signal_closes_with_pnl_net_of_fees(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    world.next_bar(y="102", x="49", action=Signal.Action.EXIT, zscore=0.1)
    report = world.tick()
    trade = world.trade()
    assert report.closed == 1 and trade.state == PairTrade.State.CLOSED
    assert trade.exit_reason == Reason.EXIT_SIGNAL and trade.exit_zscore == pytest.approx(0.1)
    fills = Fill.objects.filter(order__trade=trade).select_related("order")
    cash = sum((f.qty * f.price if f.order.side == "sell" else -f.qty * f.price) for f in fills)
    fees = sum(f.fee for f in fills)
    assert trade.fees == fees > 0
    assert trade.realised_pnl == cash - fees + trade.funding
    # long y 5 from 100 to 102 (+10), short x 8.5 from 50 to 49 (+8.5), minus slippage and fees
    assert Decimal("17") < trade.realised_pnl < Decimal("18.5")
    assert BotWorld.paper_positions(world.account) == {}
    assert all(o.reduce_only for o in trade.orders.filter(action=Order.Action.CLOSE))


@pytest.mark.parametrize("action,reason", [(Signal.Action.STOP, Reason.STOP),
                                           (Signal.Action.MAX_HOLDING, Reason.MAX_HOLDING)])
def test_stop_and_max_holding_signals_close(world, action, reason):
    world.next_bar(action=Signal.Action.ENTER_SHORT, zscore=2.2)
    world.tick()
    world.next_bar(action=action, zscore=4.5)
    world.tick()
    assert world.trade().state == PairTrade.State.CLOSED and world.trade().exit_reason == reason


def test_exit_missed_while_the_bot_was_down_still_closes(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    world.next_bar(action=Signal.Action.EXIT)
    world.next_bar(action=Signal.Action.HOLD, position=0)
    world.next_bar(action=Signal.Action.HOLD, position=0)
    world.tick()
    assert world.trade().exit_reason == Reason.EXIT_SIGNAL


def test_pair_leaving_the_level_closes(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    world.pair.level = Level.objects.get(number=2)
    world.pair.save()
    world.next_bar(action=Signal.Action.HOLD, position=1)
    world.tick()
    assert world.trade().exit_reason == Reason.LEVEL_CHANGED


def test_broken_cointegration_closes(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    world.pair.consecutive_failures = world.config.max_consecutive_failures
    world.pair.save()
    world.next_bar(action=Signal.Action.HOLD, position=1)
    world.tick()
    assert world.trade().exit_reason == Reason.COINTEGRATION_BROKEN


def test_manual_close_request(world, django_user_model):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    user = django_user_model.objects.create_user("trader")
    assert trade_request_close(trade=world.trade(), user=user, wake_bot=False)
    world.tick()
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == Reason.MANUAL
    assert trade.close_requested_by == user
    assert not trade_request_close(trade=trade, wake_bot=False)


def test_halt_blocks_openings_and_flatten_halt_closes(world):
    halt = HaltFactory(account=world.account)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = world.tick()
    assert world.trades() == [] and "test halt" in report.skipped[0]
    Halt.objects.update(cleared_at=world.now)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.3)
    world.tick()
    assert world.trade().state == PairTrade.State.OPEN
    HaltFactory(account=None, flatten=True, reason="guard: daily loss")
    world.next_bar(action=Signal.Action.HOLD, position=1)
    world.tick()
    assert world.trade().state == PairTrade.State.CLOSED and world.trade().exit_reason == Reason.GUARD_HALT
    assert halt.pk


def test_limits_cap_concurrent_trades_and_exposure(world):
    RiskLimitFactory(account=world.account, max_gross_exposure=Decimal("500"))
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = world.tick()
    assert world.trades() == [] and "exceed" in report.skipped[0]


def test_an_unsizeable_pair_is_skipped_with_a_reason(world):
    world.y.min_qty = Decimal("10")
    world.y.save()
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = world.tick()
    assert world.trades() == [] and "below the minimum" in report.skipped[0]


def test_stale_entry_signal_is_not_traded(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.next_bar(action=Signal.Action.HOLD, position=1)
    world.next_bar(action=Signal.Action.HOLD, position=1)
    world.tick()
    assert world.trades() == []


def test_second_owner_is_locked_out(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    assert world.tick(owner="bot-1").status == "ok"
    report = world.tick(owner="bot-2")
    assert report.status == "locked"


def test_funding_settled_while_open_is_recorded_and_counted_in_pnl(world):
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)  # bar 01:00, the trade opens at 02:00
    world.tick()
    for _ in range(7):  # through the 08:00 settlement
        world.next_bar(action=Signal.Action.HOLD, position=1)
        world.tick()
    trade = world.trade()
    payments = list(FundingPayment.objects.filter(trade=trade).order_by("instrument__symbol"))
    assert [p.instrument.symbol for p in payments] == ["XXXUSDT", "YYYUSDT"]
    rate = Decimal(str(world.config.default_funding_rate))
    long_y, short_x = payments[1], payments[0]
    assert long_y.amount == (-Decimal("5") * Decimal("100") * rate).quantize(Decimal("1e-12"))  # longs pay
    assert short_x.amount == (Decimal("8.5") * Decimal("50") * rate).quantize(Decimal("1e-12"))  # shorts receive
    assert trade.funding == long_y.amount + short_x.amount
    world.next_bar(action=Signal.Action.EXIT)
    world.tick()
    trade.refresh_from_db()
    assert trade.state == PairTrade.State.CLOSED and trade.funding == long_y.amount + short_x.amount
    fills = Fill.objects.filter(order__trade=trade).select_related("order")
    cash = sum((f.qty * f.price if f.order.side == "sell" else -f.qty * f.price) for f in fills)
    assert trade.realised_pnl == cash - trade.fees + trade.funding
    assert FundingPayment.objects.filter(trade=trade).count() == 2  # later ticks recorded nothing twice


def test_a_second_pair_sharing_a_held_instrument_is_not_opened(world):
    zzz = InstrumentFactory(base="ZZZ")
    other = PairFactory(y_instrument=world.y, x_instrument=zzz, level=world.level)
    world.prices[zzz.pk] = Decimal("20")
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.signal(Signal.Action.ENTER_SHORT, zscore=3.0, pair=other)  # better |z|: planned first
    report = world.tick()
    assert [t.pair_id for t in world.trades()] == [other.pk]
    assert any("already held" in reason for reason in report.skipped)


def test_pairs_of_another_exchange_are_not_traded(world):
    foreign = PairFactory(y_instrument=InstrumentFactory(exchange="binance", base="AAA"),
                          x_instrument=InstrumentFactory(exchange="binance", base="BBB"), level=world.level)
    world.signal(Signal.Action.ENTER_LONG, zscore=-3.0, pair=foreign)
    world.tick()
    assert world.trades() == []


def test_a_tick_right_after_the_last_keeps_the_lease_and_the_heartbeat_renews_it(world):
    world.tick()
    renewed = BotHeartbeat.objects.get(account=world.account).lease_expires_at
    report = world.tick()  # at once: the lease was renewed by the last heartbeat, less than LEASE_KEEP_S ago
    heartbeat = BotHeartbeat.objects.get(account=world.account)
    assert report.status == "ok" and heartbeat.lease_owner == "bot-1"
    assert heartbeat.lease_expires_at > renewed  # renewed at the end of the tick, by the heartbeat


def test_a_tick_renews_an_older_lease_before_trading(world, monkeypatch):
    """A lease renewed LEASE_KEEP_S or more ago is renewed at the start of the tick (a live bot ticking every
    minute), so a tick never starts with much less than the whole TTL ahead of it."""
    world.tick()
    aged = timezone.now() + lease.LEASE_TTL - timedelta(seconds=lease.LEASE_KEEP_S + 1)
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=aged)
    renewals = []
    acquire = lease.lease_acquire
    monkeypatch.setattr(lease, "lease_acquire", lambda *a, **k: renewals.append(1) or acquire(*a, **k))
    assert world.tick().status == "ok"
    assert renewals == [1]
    renewals.clear()
    assert world.tick().status == "ok"  # right after: kept
    assert renewals == []


def test_a_kept_lease_is_renewed_during_the_tick_by_its_age(world, monkeypatch):
    """The tick's own renewals (TradingContext.renew_lease, every LEASE_RENEW_AFTER_S) count the age the kept lease
    had at the start of the tick."""
    world.tick()
    seen = []
    real = tick.TradingContext

    def context(**kwargs):
        ctx = real(**kwargs)
        seen.append(time.monotonic() - ctx._lease_renewed)
        return ctx

    monkeypatch.setattr(tick, "TradingContext", context)
    aged = timezone.now() + lease.LEASE_TTL - timedelta(seconds=lease.LEASE_KEEP_S / 2)
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=aged)
    world.tick()
    assert len(seen) == 1 and lease.LEASE_KEEP_S / 2 - 1 < seen[0] < lease.LEASE_KEEP_S


def test_a_halt_raised_while_the_first_trade_of_a_batch_fills_stops_the_next_ones(world):
    """The tick plans every entry first, then sends them one after another: a halt that lands while the first fills
    must stop the legs not yet sent (the plan-time check saw no halt)."""
    from risk.services import halt_raise

    a = InstrumentFactory(base="AAA", qty_step=Decimal("0.01"), min_qty=Decimal("0.01"))
    b = InstrumentFactory(base="BBB", qty_step=Decimal("0.01"), min_qty=Decimal("0.01"))
    other = PairFactory(y_instrument=a, x_instrument=b, level=world.level)
    world.prices[a.pk], world.prices[b.pk] = Decimal("100"), Decimal("50")
    world.account.max_concurrent_trades = 5
    world.account.save()
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.5)
    world.signal(Signal.Action.ENTER_SHORT, zscore=2.2, pair=other)
    raised = []

    def halt_while_filling(step):
        if step.startswith("after_send:") and not raised:
            raised.append(halt_raise(account=world.account, source=Halt.Source.GUARD, reason="daily loss limit",
                                     mode=Halt.Mode.HALT, trigger="daily_loss", now=world.now))

    world.tick(checkpoint=halt_while_filling)
    first, second = world.trades()
    assert raised and first.state == PairTrade.State.OPEN  # its first leg was out: both legs complete the hedge
    assert second.state == PairTrade.State.FAILED and "halt" in second.error
    assert not Order.objects.filter(trade=second, filled_qty__gt=0).exists()
