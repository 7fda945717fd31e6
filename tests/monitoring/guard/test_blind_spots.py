"""The guard fails closed where it can't see, and measures what it can:

- one account whose exchange can't be read (no keys, an error, a slow exchange) stops that account's entries and
  no other's: every other account is still held to its limits, and the guard's exchange reads fit its time limit;
- a leg whose feed stopped is marked at its last known close (its loss stays visible); a held leg with no price at
  all stops the account's entries and never raises the equity peak;
- the balance check's two baselines (the book's and the exchange's equity) move together, so a cycle that did not
  read the exchange (an outage, the cycle after a trade closed) can't make a false balance halt or hide a drain.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from core.clock import ManualClock
from core.secrets import register_secret
from exchanges.errors import TemporaryExchangeError
from exchanges.retry import RetryingExchange
from execution.models import ExchangeAccount, PairTrade, Signal
from execution.venues import account_trading_exchange
from monitoring.guard import live
from monitoring.guard.book import account_books
from monitoring.guard.cycle import BLIND_LATCH, guard_run
from monitoring.tasks import run_guard
from pairs.market import StoredMarket
from pairs.models import Candle
from risk.models import AccountGuardState, GuardEvent, Halt, RiskLimit
from risk.services import halts_clear
from tests.execution.bot_world import BotWorld
from tests.factories import ExchangeAccountFactory, PairTradeFactory, RiskLimitFactory
from tests.fakes.bybit import FakeBybit

pytestmark = pytest.mark.django_db


def market_of(world: BotWorld) -> StoredMarket:
    return StoredMarket(timeframe="1h", clock=ManualClock(world.now))


def open_and_crash(world: BotWorld) -> None:
    """Long 5 y at 100 against short x: y falls to 60, about -200 unrealised."""
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    assert world.trade().state == PairTrade.State.OPEN
    world.next_bar(y="60")


class StubExchange:
    """A demo account's exchange in memory: its equity, its positions, and an outage switch."""

    def __init__(self, equity="10000", positions=()):
        self.equity, self.down, self.held = Decimal(equity), False, list(positions)

    def positions(self):
        if self.down:
            raise TemporaryExchangeError("unreachable")
        return self.held

    def balance(self):
        return SimpleNamespace(equity=self.equity)

    def symbol_for(self, instrument):
        return instrument.symbol


# ------------------------------------------------------------------------------- 1. one unreadable exchange

def test_an_account_without_keys_stops_its_own_entries_and_the_others_are_still_guarded(caplog):
    world = BotWorld()
    RiskLimitFactory(account=world.account, daily_loss_limit=Decimal("100"), stale_data_minutes=None)
    open_and_crash(world)
    keyless = ExchangeAccountFactory(level=world.level, mode=ExchangeAccount.Mode.DEMO, name="demo-no-keys")
    readable = ExchangeAccountFactory(level=world.level, mode=ExchangeAccount.Mode.DEMO, name="demo-ok")
    by_hand = StubExchange(positions=[SimpleNamespace(symbol="ZZZUSDT", qty=Decimal("1"))])
    market = market_of(world)

    def exchange_for(account):  # what guard_run_live passed: the keyless one raises CredentialsMissing
        if account.pk == readable.pk:
            return by_hand
        return RetryingExchange(account_trading_exchange(account, market=market, config=world.config))

    with caplog.at_level(logging.WARNING, logger="monitoring.guard.detectors"):
        report = guard_run(now=world.now, market=market, accounts=[world.account, keyless, readable], live=False,
                           exchange_for=exchange_for)

    found = {(b.account_id, b.check) for b in report.breaches}
    assert (world.account.pk, "daily_loss") in found  # the paper account's bad day still halts it
    assert (keyless.pk, "exchange_unreadable") in found
    assert (readable.pk, "position_mismatch") in found  # the account after the failing one was still read
    assert Halt.objects.get(account=world.account, trigger="daily_loss").mode == Halt.Mode.HALT
    halt = Halt.objects.get(account=keyless, trigger="exchange_unreadable")
    assert (halt.source, halt.mode, halt.until, halt.cleared_at) == (Halt.Source.GUARD, Halt.Mode.REDUCE,
                                                                     world.now + BLIND_LATCH, None)
    assert "CredentialsMissing" in halt.reason
    assert report.states["demo-no-keys"] == "reducing"
    assert GuardEvent.objects.filter(account=keyless, kind="exchange_unreadable", severity="critical").count() == 1
    assert any("demo-no-keys" in r.getMessage() and "could not be read" in r.getMessage() for r in caplog.records)

    # The next cycle raises nothing new for it: the halt stands for its latch.
    again = guard_run(now=world.now, market=market, accounts=[world.account, keyless, readable], live=False,
                      exchange_for=exchange_for)
    assert not [h for h in again.halts_raised if h.account_id == keyless.pk]
    assert Halt.objects.filter(account=keyless).count() == 1
    # Still unreadable once the latch ended: raised again, so an outage keeps the entries stopped.
    later = world.now + BLIND_LATCH + timedelta(minutes=1)
    guard_run(now=later, market=market, accounts=[keyless], live=False, exchange_for=exchange_for)
    assert Halt.objects.filter(account=keyless, trigger="exchange_unreadable", cleared_at__isnull=True).count() == 1
    assert Halt.objects.filter(account=keyless).count() == 2
    # Readable again: the last halt ends with its latch and is not raised again (a blip needs no person).
    guard_run(now=later + BLIND_LATCH + timedelta(minutes=1), market=market, accounts=[keyless], live=False,
              exchange_for=lambda account: StubExchange())
    assert not Halt.objects.filter(account=keyless, cleared_at__isnull=True).exists()
    assert Halt.objects.filter(account=keyless).count() == 2


def test_any_error_of_an_account_is_caught_and_its_text_redacted(caplog):
    world = BotWorld(mode=ExchangeAccount.Mode.DEMO)
    secret = "s3cr3t-api-key-0123456789abcdef"
    register_secret(secret)

    def exchange_for(account):
        raise RuntimeError(f"client crashed with key {secret}")

    with caplog.at_level(logging.WARNING, logger="monitoring.guard.detectors"):
        report = guard_run(now=world.now, market=market_of(world), accounts=[world.account], live=False,
                           exchange_for=exchange_for)
    assert [b.check for b in report.breaches if b.account_id == world.account.pk] == ["exchange_unreadable"]
    halt = Halt.objects.get(account=world.account, trigger="exchange_unreadable")
    event = GuardEvent.objects.get(account=world.account, kind="exchange_unreadable")
    for text in (halt.reason, event.message, *(r.getMessage() for r in caplog.records)):
        assert secret not in text
    assert "RuntimeError" in halt.reason and "***" in halt.reason


def test_a_blind_halt_a_person_cleared_holds_only_its_latch_not_the_rest_of_the_day(django_user_model):
    """The trader clears an 'exchange not readable' stop (a key being rotated, say). It was taken as a latched breach
    let go for the day: a new outage hours later never stopped the account's entries again until midnight."""
    world = BotWorld(mode=ExchangeAccount.Mode.DEMO)
    RiskLimit.objects.create(account=None, stale_data_minutes=None, one_leg_seconds=None)
    exchange = StubExchange()
    exchange.down = True
    first = cycle(world, exchange).halts_raised
    assert [h.trigger for h in first] == ["exchange_unreadable"]
    trader = django_user_model.objects.create_user("t", password="a-long-test-password")
    halts_clear(halts=Halt.objects.filter(pk=first[0].pk), cleared_by=trader, now=world.now)
    assert cycle(world, exchange).halts_raised == []  # within its latch the clear holds: the trader looked
    exchange.down = False
    world.next_bar()
    assert cycle(world, exchange).halts_raised == []
    for _ in range(3):  # hours later, the same day: a new outage
        world.next_bar()
    exchange.down = True
    assert [h.trigger for h in cycle(world, exchange).halts_raised] == ["exchange_unreadable"]
    assert report_state(world) == "reducing"


def report_state(world: BotWorld) -> str:
    return AccountGuardState.objects.get(account=world.account).state


@pytest.fixture
def slow_fake():
    with FakeBybit(balance="100000") as server:
        yield server


@pytest.fixture
def demo_world(slow_fake, monkeypatch) -> BotWorld:
    monkeypatch.setenv("STATARB_CRED_G_KEY", "test-key")
    monkeypatch.setenv("STATARB_CRED_G_SECRET", "test-secret")
    return BotWorld(mode=ExchangeAccount.Mode.DEMO, base_url_override=slow_fake.base_url,
                    api_key_env="STATARB_CRED_G_KEY", api_secret_env="STATARB_CRED_G_SECRET")


def test_the_guards_exchange_budget_fits_well_inside_its_time_limit():
    # Worst case: the last account starts at the budget's end, then two calls (positions, balance), each
    # attempted EXCHANGE_ATTEMPTS times at the timeout, with the longest backoffs (0.5 s doubling, +25 % jitter).
    backoff = sum(0.5 * 2 ** k * 1.25 for k in range(live.EXCHANGE_ATTEMPTS - 1))
    call = live.EXCHANGE_ATTEMPTS * live.EXCHANGE_TIMEOUT_MS / 1000 + backoff
    worst = live.EXCHANGE_BUDGET_S + 2 * call
    assert worst < run_guard.soft_time_limit - 5, worst  # leaves the database work its seconds


def test_a_slow_exchange_is_asked_within_the_guards_budget_and_stops_the_accounts_entries(
        demo_world, slow_fake, monkeypatch):
    monkeypatch.setattr(live, "EXCHANGE_TIMEOUT_MS", 300)
    slow_fake.timeout_after_accept_next(None, delay_s=1.0, times=100)  # every answer comes too late
    market = market_of(demo_world)
    exchange_for = live.guard_exchanges(market=market, config=demo_world.config, deadline=time.monotonic() + 60)
    started = time.monotonic()
    report = guard_run(now=demo_world.now, market=market, accounts=[demo_world.account], live=False,
                       exchange_for=exchange_for)
    assert time.monotonic() - started < 5  # the bots' budget (5 attempts at 10 s) would take about a minute
    assert len(slow_fake.requests) == live.EXCHANGE_ATTEMPTS  # the first call tried twice, then the account failed
    assert [b.check for b in report.breaches] == ["exchange_unreadable"]
    assert Halt.objects.filter(account=demo_world.account, trigger="exchange_unreadable",
                               mode=Halt.Mode.REDUCE).exists()


def test_past_the_budget_an_account_is_reported_unreadable_without_a_call(demo_world, slow_fake):
    market = market_of(demo_world)
    exchange_for = live.guard_exchanges(market=market, config=demo_world.config, deadline=time.monotonic() - 1)
    report = guard_run(now=demo_world.now, market=market, accounts=[demo_world.account], live=False,
                       exchange_for=exchange_for)
    assert slow_fake.requests == []
    assert [b.check for b in report.breaches] == ["exchange_unreadable"]
    assert "ran out" in report.breaches[0].message


def test_a_readable_exchange_is_read_with_the_guards_budget(demo_world, slow_fake):
    market = market_of(demo_world)
    exchange_for = live.guard_exchanges(market=market, config=demo_world.config, deadline=time.monotonic() + 60)
    report = guard_run(now=demo_world.now, market=market, accounts=[demo_world.account], live=False,
                       exchange_for=exchange_for)
    assert report.breaches == []
    assert AccountGuardState.objects.get(account=demo_world.account).exchange_equity == Decimal("100000")


# ------------------------------------------------------------------------------- 2. legs without a current price

def test_a_leg_whose_feed_stopped_is_marked_at_its_last_close_and_its_loss_still_halts():
    world = BotWorld()
    RiskLimitFactory(account=world.account, daily_loss_limit=Decimal("100"), stale_data_minutes=None)
    open_and_crash(world)
    seen = account_books([world.account], now=world.now, market=market_of(world))[world.account.pk]
    assert seen.unrealised < Decimal("-190")
    del world.prices[world.y.pk]  # y's feed stops (a delisting, a data outage); x goes on
    for _ in range(4):  # beyond the market's MAX_PRICE_AGE_BARS: y has no current price
        world.next_bar()
    market = market_of(world)
    assert world.y.pk not in market.closes([world.y.pk])
    later = account_books([world.account], now=world.now, market=market)[world.account.pk]
    assert later.unrealised == seen.unrealised  # y at its last close, 60: the -200 stays
    assert later.missing_marks == []
    y_leg = later.open_trades[0].legs["y"]
    assert (y_leg.mark, y_leg.stale) == (Decimal("60"), True)
    report = guard_run(now=world.now, market=market, accounts=[world.account], live=False)
    assert "daily_loss" in [b.check for b in report.breaches]
    assert Halt.objects.filter(account=world.account, trigger="daily_loss").exists()


def test_a_held_leg_without_any_price_stops_entries_and_never_raises_the_peak():
    world = BotWorld()
    RiskLimitFactory(account=world.account, daily_loss_limit=None, stale_data_minutes=None)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    assert world.trade().state == PairTrade.State.OPEN
    guard_run(now=world.now, market=market_of(world), accounts=[world.account], live=False)
    peak = AccountGuardState.objects.get(account=world.account).peak_equity
    assert peak is not None

    # x falls (the short x leg gains) while y's candles are gone: y at cost, the equity above the peak is a guess.
    world.next_bar(x="40")
    Candle.objects.filter(instrument=world.y).delete()
    book = account_books([world.account], now=world.now, market=market_of(world))[world.account.pk]
    assert book.missing_marks == [world.y.pk] and book.equity > peak
    report = guard_run(now=world.now, market=market_of(world), accounts=[world.account], live=False)

    breach = next(b for b in report.breaches if b.check == "missing_marks")
    assert world.y.symbol in breach.message
    halt = Halt.objects.get(account=world.account, trigger="missing_marks")
    assert (halt.mode, halt.until) == (Halt.Mode.REDUCE, world.now + BLIND_LATCH)  # lifts itself once priced
    assert report.states[world.account.name] == "reducing"
    assert GuardEvent.objects.filter(account=world.account, kind="missing_marks").exists()
    assert AccountGuardState.objects.get(account=world.account).peak_equity == peak  # drawdown is measured from it

    # The price comes back below the guess: the drawdown is measured from the peak the guard really saw.
    world.prices[world.y.pk] = Decimal("60")
    world.next_bar(x="40")
    back = guard_run(now=world.now, market=market_of(world), accounts=[world.account], live=False)
    assert "missing_marks" not in [b.check for b in back.breaches]
    assert AccountGuardState.objects.get(account=world.account).peak_equity == peak


def test_without_a_stored_peak_a_missing_mark_stores_none():
    world = BotWorld()
    RiskLimitFactory(account=world.account, daily_loss_limit=None, stale_data_minutes=None)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    Candle.objects.filter(instrument=world.y).delete()
    guard_run(now=world.now, market=market_of(world), accounts=[world.account], live=False)
    assert AccountGuardState.objects.get(account=world.account).peak_equity is None


# ------------------------------------------------------------------------------- 3. the balance check's baselines

def balance_world():
    world = BotWorld(mode=ExchangeAccount.Mode.DEMO)
    RiskLimit.objects.create(account=None, stale_data_minutes=None, one_leg_seconds=None)  # tolerance 0.5 %: 50
    return world


def cycle(world: BotWorld, exchange: StubExchange | None):
    return guard_run(now=world.now, market=market_of(world), accounts=[world.account], live=False,
                     exchange_for=None if exchange is None else (lambda account: exchange))


def close_a_loss(world: BotWorld, amount: str) -> None:
    PairTradeFactory(account=world.account, pair=world.pair, state=PairTrade.State.CLOSED,
                     realised_pnl=Decimal(amount), closed_at=world.now - timedelta(minutes=1),
                     opened_at=world.now - timedelta(minutes=30))


def test_an_exchange_outage_leaves_both_balance_baselines_and_raises_no_false_halt():
    world, exchange = balance_world(), StubExchange()
    cycle(world, exchange)  # the baselines: book 10000, exchange 10000
    exchange.down = True
    world.next_bar()
    close_a_loss(world, "-300")  # the book and the exchange both lose 300 while the guard can't read it
    exchange.equity = Decimal("9700")
    during = cycle(world, exchange)
    assert [b.check for b in during.breaches] == ["exchange_unreadable"]
    assert GuardEvent.objects.filter(account=world.account, kind="exchange_unreadable").exists()
    state = AccountGuardState.objects.get(account=world.account)
    assert (state.equity, state.exchange_equity) == (Decimal("10000"), Decimal("10000"))

    exchange.down = False
    world.next_bar()
    after = cycle(world, exchange)
    assert "balance" not in [b.check for b in after.breaches]
    assert not Halt.objects.filter(trigger="balance").exists()
    state.refresh_from_db()
    assert (state.equity, state.exchange_equity) == (Decimal("9700"), Decimal("9700"))


def test_a_drain_during_an_outage_is_still_caught_after_it():
    world, exchange = balance_world(), StubExchange()
    cycle(world, exchange)
    exchange.down = True
    world.next_bar()
    exchange.equity = Decimal("9700")  # no trade explains it
    cycle(world, exchange)
    exchange.down = False
    world.next_bar()
    after = cycle(world, exchange)
    assert "balance" in [b.check for b in after.breaches]
    assert Halt.objects.filter(account=world.account, trigger="balance", mode=Halt.Mode.HALT).exists()


def test_a_cycle_after_a_trade_closed_does_not_move_the_book_baseline_alone():
    """on_trade_finished runs a cycle without the exchange: it must not advance the book's baseline past the
    exchange's, or the next beat holds the exchange's loss against a book that shows none."""
    world, exchange = balance_world(), StubExchange()
    cycle(world, exchange)
    world.next_bar()
    close_a_loss(world, "-300")
    exchange.equity = Decimal("9700")
    cycle(world, None)  # the receiver's cycle: no exchange_for
    world.next_bar()
    after = cycle(world, exchange)
    assert "balance" not in [b.check for b in after.breaches]
    assert not Halt.objects.filter(trigger="balance").exists()


def test_a_paper_account_still_remembers_its_equity():
    world = BotWorld()
    RiskLimitFactory(account=world.account, daily_loss_limit=None, stale_data_minutes=None)
    cycle(world, None)
    assert AccountGuardState.objects.get(account=world.account).equity == Decimal("10000")
