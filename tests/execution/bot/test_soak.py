"""A random soak of the engine against the fake Bybit v5 server and the real ccxt client (issue #12).

Four pairs trade in turn over a few hundred bars while the exchange misbehaves at random (seeded): error answers
before and after the exchange applied a request (10016, 5xx pages, dropped connections, timeouts), rate limits and
latency; and the bot's process is killed at random steps of opening and closing and restarted. At the end, with the
faults stopped and the trades in flight settled, the books must agree exactly:

- every exchange position is held by exactly one open trade, in the trade's ratio (no orphan, no doubled leg);
- every order row of the bot matches the exchange's order (filled quantity, average price);
- every fill matches an execution of the exchange (id, quantity, price, fee);
- no trade is left planned, opening or closing.

The counts are printed (``-s`` shows them) and must all be 0. ``SOAK_SEED`` and ``SOAK_TRADES`` run other soaks.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta
from decimal import Decimal

import pytest

from execution.models import BotHeartbeat, Fill, Order, PairTrade, Signal
from execution.services.orders import LEGS, leg_net
from execution.services.trades import leg_targets
from tests.execution.bot.fault_world import Killed, tick
from tests.execution.bot_world import BotWorld
from tests.factories import InstrumentFactory, PairFactory
from tests.fakes.bybit import FakeBybit

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SEED = int(os.environ.get("SOAK_SEED", "20261205"))
TRADES = int(os.environ.get("SOAK_TRADES", "200"))
FAULT_PROBABILITY = 0.08
KILL_PROBABILITY = 0.03
STEPS = ("planned:trade", "before_send:yo1", "after_send:yo1", "before_send:xo1", "after_send:xo1", "closing",
         "planned:yc1", "before_send:yc1", "after_send:yc1", "planned:xc1", "before_send:xc1", "after_send:xc1")
EXTRA_PAIRS = (("AAA", "BBB", "20", "40"), ("CCC", "DDD", "30", "15"), ("EEE", "FFF", "12", "24"))


@pytest.fixture
def soak_fake():
    with FakeBybit(timeout_delay_s=0.4, balance="10000000") as server:
        for base, price in (("YYY", "100"), ("XXX", "50"), *[(b, p) for pair in EXTRA_PAIRS
                                                              for b, p in ((pair[0], pair[2]), (pair[1], pair[3]))]):
            server.add_instrument(f"{base}USDT", base=base, tick_size="0.0001", qty_step="0.01", min_qty="0.01",
                                  price=price)
        yield server
    assert server.errors == []


class Soak:
    def __init__(self, world: BotWorld, fake: FakeBybit, rng: random.Random):
        self.world, self.fake, self.rng = world, fake, rng
        self.pairs = [world.pair]
        for y_base, x_base, y_price, x_price in EXTRA_PAIRS:
            y = InstrumentFactory(base=y_base, qty_step=Decimal("0.01"), min_qty=Decimal("0.01"))
            x = InstrumentFactory(base=x_base, qty_step=Decimal("0.01"), min_qty=Decimal("0.01"))
            world.prices[y.pk], world.prices[x.pk] = Decimal(y_price), Decimal(x_price)
            self.pairs.append(PairFactory(y_instrument=y, x_instrument=x, level=world.level,
                                          hedge_ratio=rng.choice([0.6, 0.9, 1.3])))
        world.account.max_concurrent_trades = len(self.pairs)
        world.account.save()
        self.owner = 0
        self.kills = 0

    def checkpoint(self, step: str) -> None:
        if step in STEPS and self.rng.random() < KILL_PROBABILITY:
            self.kills += 1
            raise Killed(step)

    def tick(self, minutes: int = 0):
        try:
            return tick(self.world, owner=f"soak-{self.owner}", checkpoint=self.checkpoint,
                        now=self.world.now + timedelta(minutes=minutes))
        except Killed:
            # The process died: a new one starts once the dead one's lease has expired.
            self.owner += 1
            BotHeartbeat.objects.filter(account=self.world.account).update(lease_expires_at=None)
            return None

    def bar(self) -> None:
        """One bar: move prices a little, give each pair its signal, tick a few times a minute apart."""
        self.world.next_bar()
        for instrument_id in list(self.world.prices):
            self.world.prices[instrument_id] *= Decimal(str(round(self.rng.uniform(0.99, 1.01), 4)))
        self.world._write_bar()
        for instrument in {i for p in self.pairs for i in (p.y_instrument, p.x_instrument)}:
            self.fake.set_price(instrument.symbol, self.world.prices[instrument.pk].quantize(Decimal("0.0001")))
        holding = {t.pair_id for t in PairTrade.objects.filter(account=self.world.account,
                                                               state__in=PairTrade.ACTIVE_STATES)}
        for pair in self.pairs:
            if pair.pk in holding:
                if self.rng.random() < 0.5:
                    self.world.signal(Signal.Action.EXIT, pair=pair)
            elif self.rng.random() < 0.7:
                action = self.rng.choice([Signal.Action.ENTER_LONG, Signal.Action.ENTER_SHORT])
                self.world.signal(action, zscore=-2.3 if action == Signal.Action.ENTER_LONG else 2.3, pair=pair)
        for minute in range(3):
            self.tick(minute)


def audit(fake: FakeBybit, account) -> dict[str, int]:
    """The soak's counts of what must never happen (each should be 0)."""
    counts = {"orphan legs": 0, "doubled legs": 0, "quantity mismatches": 0, "stuck trades": 0}
    held = {symbol: pos.size for symbol, pos in fake.positions().items() if pos.size}
    holders: dict[str, Decimal] = {}
    for trade in PairTrade.objects.filter(account=account).select_related("pair__y_instrument", "pair__x_instrument"):
        orders = list(trade.orders.all())
        if trade.state not in (*PairTrade.FINAL_STATES, PairTrade.State.OPEN):
            counts["stuck trades"] += 1
        targets = leg_targets(trade)
        for leg in LEGS:
            net = leg_net(orders, leg)
            symbol = (trade.pair.y_instrument if leg == "y" else trade.pair.x_instrument).symbol
            holders[symbol] = holders.get(symbol, Decimal(0)) + net
            if trade.state == PairTrade.State.OPEN and net != targets[leg]:
                counts["doubled legs" if abs(net) > abs(targets[leg]) else "quantity mismatches"] += 1
            if trade.state in PairTrade.FINAL_STATES and net:
                counts["orphan legs"] += 1
    for symbol in set(held) | set(holders):
        if held.get(symbol, Decimal(0)) != holders.get(symbol, Decimal(0)):
            counts["orphan legs" if not holders.get(symbol) else "quantity mismatches"] += 1
    exchange_orders = {o.order_link_id: o for o in fake.orders()}
    for order in Order.objects.filter(trade__account=account).exclude(action=Order.Action.RECONCILE):
        remote = exchange_orders.get(order.client_order_id)
        filled_remote = remote.cum_exec_qty if remote else Decimal(0)
        if order.filled_qty != filled_remote or (remote and order.filled_qty and order.avg_price != remote.avg_price):
            counts["quantity mismatches"] += 1
    executions = {e.exec_id: e for e in fake.executions()}
    for fill in Fill.objects.filter(order__trade__account=account):
        e = executions.get(fill.exchange_fill_id)
        if e is None or (e.exec_qty, e.exec_price, e.exec_fee) != (fill.qty, fill.price, fill.fee):
            counts["quantity mismatches"] += 1
    return counts


@pytest.mark.parametrize("mode", ["real", "demo"])
def test_random_faults_and_kills_leave_the_books_exact(soak_fake, mode):
    fake = soak_fake
    world = BotWorld(mode=mode, base_url_override=fake.base_url)
    world.timeout_ms = 250
    rng = random.Random(SEED)
    soak = Soak(world, fake, rng)
    fake.random_faults(SEED, probability=FAULT_PROBABILITY, latency_s=(0.0, 0.005))
    bars = 0
    while PairTrade.objects.filter(account=world.account).count() < TRADES and bars < TRADES * 4:
        soak.bar()
        bars += 1
    faults = fake.random_fault_counts()
    fake.stop_random_faults()
    for minute in range(10, 40, 3):  # settle: no faults, no kills; the grace periods run out
        soak.owner += 1
        BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=None)
        tick(world, owner=f"soak-{soak.owner}", now=world.now + timedelta(minutes=minute))
    counts = audit(fake, world.account)
    trades = PairTrade.objects.filter(account=world.account)
    print(f"\nsoak seed {SEED} ({mode}): {trades.count()} pair trades over {bars} bars, {soak.kills} kills, faults "
          f"{ {k: v for k, v in faults.items() if v} }; states "
          f"{dict((s, trades.filter(state=s).count()) for s in PairTrade.State.values)}; counts {counts}")
    assert trades.count() >= TRADES
    assert sum(faults.values()) > 100 and soak.kills > 5  # the soak really was rough
    assert counts == {"orphan legs": 0, "doubled legs": 0, "quantity mismatches": 0, "stuck trades": 0}, counts
