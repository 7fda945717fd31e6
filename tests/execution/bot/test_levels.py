"""The bot trades only its level's pairs, on a level it may trade: a pair moved off the level while a tick runs (or
between a crash and the next tick) is not opened; an account on a level that is watched only, or a real account on
a level without real capital, opens nothing; a pair's own halt closes or freezes that pair's trade."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from core.clock import ManualClock
from execution.bot import entries
from execution.bot.tick import bot_tick
from execution.models import ExchangeAccount, Order, PairTrade, Signal
from execution.paper.exchange import paper_exchange_for
from pairs.market import StoredMarket
from pairs.models import Level, Pair
from pairs.services.levels import pair_set_level
from risk.models import Halt
from tests.execution.bot_market import BotMarket
from tests.factories import HaltFactory, LevelFactory

pytestmark = pytest.mark.django_db


class Crash(Exception):
    pass


def _watch_level() -> Level:
    return LevelFactory(number=0, name="watch")


def _tick(market: BotMarket, checkpoint=None):
    stored = StoredMarket(timeframe="1h", clock=ManualClock(market.now()))
    return bot_tick(account=market.account, exchange=paper_exchange_for(market.account, market=stored,
                                                                        config=market.config),
                    market=stored, config=market.config, owner=market.owner, sleep=lambda s: None,
                    checkpoint=checkpoint)


def test_a_pair_moved_off_the_level_while_the_tick_runs_is_not_opened():
    market = BotMarket(name="mid", start=datetime(2021, 6, 1, tzinfo=UTC))
    market.grow(instruments=2, pairs=1, trades=1)
    watch = _watch_level()
    prepare = entries._prepare_symbols

    def demote_then_prepare(ctx, instruments):
        # Right before the plan: the signals were matched to the account's level at the start of the tick.
        for pair in Pair.objects.filter(y_instrument=instruments[0], x_instrument=instruments[1]):
            pair_set_level(pair=pair, level=watch, reason="moved by a person mid-tick")
        return prepare(ctx, instruments)

    with mock.patch.object(entries, "_prepare_symbols", demote_then_prepare), \
            pytest.raises(RuntimeError, match="opened 0 of 1"):
        market.grow(instruments=2, pairs=1, trades=1)
    moved = market.pairs[-1]
    assert not PairTrade.objects.filter(pair=moved).exists()
    assert PairTrade.objects.filter(account=market.account).count() == 1  # the first pair's trade only


def test_a_trade_planned_before_a_crash_is_not_sent_once_its_pair_left_the_level():
    market = BotMarket(name="crash")
    market.grow(instruments=2, pairs=1, trades=1)
    tick = market.tick
    market.tick = lambda **kw: None  # grow's own tick is the one below, which dies right after the plan
    try:
        with pytest.raises(AttributeError):
            market.grow(instruments=2, pairs=1, trades=1)
    finally:
        market.tick = tick

    def crash(step):
        if step.startswith("planned"):
            raise Crash(step)

    with pytest.raises(Crash):
        _tick(market, checkpoint=crash)
    moved = market.pairs[-1]
    trade = PairTrade.objects.get(pair=moved)
    assert trade.state == PairTrade.State.PLANNED
    pair_set_level(pair=moved, level=_watch_level(), reason="demoted before the next tick")

    report = _tick(market)
    trade.refresh_from_db()
    orders = list(Order.objects.filter(trade=trade))
    assert orders and all(o.status != Order.Status.FILLED and o.filled_qty == 0 for o in orders), orders
    assert any("left the account's level" in o.error for o in orders), [o.error for o in orders]
    assert report.opened == 0


def test_an_account_on_a_level_that_is_watched_only_opens_nothing():
    market = BotMarket(name="w", level_number=1)
    market.grow(instruments=2, pairs=1, trades=1)
    watch = _watch_level()
    Pair.objects.filter(level=market.level).update(level=watch)
    ExchangeAccount.objects.filter(pk=market.account.pk).update(level=watch)
    market.account.refresh_from_db()
    market.level = watch
    with pytest.raises(RuntimeError, match="opened 0 of 1"):
        market.grow(instruments=2, pairs=1, trades=1)
    report = _tick(market)
    assert any("is not traded" in line for line in report.skipped), report.skipped


def test_the_admin_refuses_an_account_on_a_level_it_may_not_trade():
    paper_level, real_level, watch = LevelFactory(number=1), LevelFactory(number=3), _watch_level()
    account = ExchangeAccount(name="a", exchange="bybit", mode=ExchangeAccount.Mode.REAL, level=paper_level,
                              capital=1000, per_trade_budget=100)
    with pytest.raises(ValidationError) as refused:
        account.full_clean()
    assert "doesn't trade real capital" in str(refused.value.message_dict["level"])
    account.level = real_level
    account.full_clean()
    account.mode, account.level = ExchangeAccount.Mode.PAPER, watch
    with pytest.raises(ValidationError) as refused:
        account.full_clean()
    assert "is not traded" in str(refused.value.message_dict["level"])


def test_disabling_an_account_that_holds_open_trades_is_refused():
    market = BotMarket(name="dis")
    market.grow(instruments=2, pairs=1, trades=1)
    account = ExchangeAccount.objects.get(pk=market.account.pk)
    account.enabled = False
    with pytest.raises(ValidationError) as refused:
        account.full_clean()
    assert "holds 1 open trade" in str(refused.value.message_dict["enabled"])
    PairTrade.objects.filter(account=account).update(state=PairTrade.State.CLOSED)
    account.full_clean()


@pytest.mark.parametrize("flatten", [True, False])
def test_a_pair_halt_closes_or_freezes_that_pairs_trade_only(flatten):
    market = BotMarket(name="ph")
    market.grow(instruments=4, pairs=2, trades=2)
    halted_pair, other_pair = market.traded
    HaltFactory(account=market.account, pair=halted_pair, mode=Halt.Mode.HALT, flatten=flatten,
                reason="this pair's news")
    # Both pairs signal an exit on the next bar: the frozen pair keeps its trade, the other closes.
    market.next_bar({halted_pair.pk: Signal.Action.EXIT, other_pair.pk: Signal.Action.EXIT},
                    {halted_pair.pk: 0, other_pair.pk: 0})
    market.tick()
    halted_trade = PairTrade.objects.get(pair=halted_pair)
    other_trade = PairTrade.objects.get(pair=other_pair)
    assert other_trade.state == PairTrade.State.CLOSED
    if flatten:
        assert halted_trade.state == PairTrade.State.CLOSED
        assert halted_trade.exit_reason == PairTrade.ExitReason.GUARD_HALT
    else:
        assert halted_trade.state == PairTrade.State.OPEN


def test_a_halt_freezes_signal_exits_but_never_a_stop_loss():
    """A halt (a daily loss limit's by default) stops entries and profit-taking exits, but a trade whose spread
    reached its stop closes anyway: a halt is there to stop losses growing, not to hold a trade past its stop."""
    market = BotMarket(name="hs")
    market.grow(instruments=4, pairs=2, trades=2)
    stopped_pair, exiting_pair = market.traded
    HaltFactory(account=market.account, mode=Halt.Mode.HALT, flatten=False, reason="daily loss over its limit")
    market.next_bar({stopped_pair.pk: Signal.Action.STOP, exiting_pair.pk: Signal.Action.EXIT},
                    {stopped_pair.pk: 0, exiting_pair.pk: 0})
    market.tick()
    stopped = PairTrade.objects.get(pair=stopped_pair)
    assert stopped.state == PairTrade.State.CLOSED and stopped.exit_reason == PairTrade.ExitReason.STOP
    assert PairTrade.objects.get(pair=exiting_pair).state == PairTrade.State.OPEN
