"""The bot in real `celery worker` processes against the fake Bybit (demo mode, the real ccxt client), broken the way
production breaks: the worker killed with SIGKILL in the middle of a trade (while the exchange holds its answer), a
restart on a new process, the same tick delivered to two workers, an answer lost after the exchange filled.

After each: what the exchange holds (positions per symbol, orders by client id), what the database says, and what
the trader was told (notifications).
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.utils import timezone

from execution.models import BotHeartbeat, Order, PairTrade, Signal
from execution.tasks import run_bot
from notifications.models import Notification
from tests.execution.bot.fault_world import CREATE, assert_consistent
from tests.execution.bot_world import BotWorld
from tests.factories import HaltFactory
from tests.fakes.bybit import FakeBybit
from tests.live_server import session_database_url
from tests.statarb_site.test_celery_worker import TASK_TIMEOUT_S, start_worker
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

KEY_ENV, SECRET_ENV = "STATARB_CRED_CRASH_KEY", "STATARB_CRED_CRASH_SECRET"
# The worker's exchange timeout (ms) and how long the fake holds an answer the test kills the worker during.
WORKER_ENV = {KEY_ENV: "key-of-the-test", SECRET_ENV: "secret-of-the-test", "STATARB_EXCHANGE_TIMEOUT_MS": "2000"}
HOLD_S = 30.0


@pytest.fixture
def fake():
    with FakeBybit(timeout_delay_s=HOLD_S, balance="100000") as server:
        server.add_instrument("YYYUSDT", base="YYY", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="100")
        server.add_instrument("XXXUSDT", base="XXX", tick_size="0.01", qty_step="0.01", min_qty="0.01", price="50")
        yield server


@pytest.fixture
def world(fake) -> BotWorld:
    """A demo account on the fake with a fresh entry signal at the wall clock; a random id: its queue can't hold
    messages of an earlier run."""
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    world = BotWorld(start=start, id=random.randint(100_000, 999_999), mode="demo", base_url_override=fake.base_url,
                     api_key_env=KEY_ENV, api_secret_env=SECRET_ENV)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.3)
    return world


def tick_in_worker(world: BotWorld) -> dict:
    return run_bot.apply_async((world.account.pk,), queue=world.account.queue_name).get(timeout=TASK_TIMEOUT_S)


def wait_for(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_the_lease_holder(world: BotWorld) -> int:
    """SIGKILL the process that holds the account's lease (its owner is host:pid:token): it dies mid-tick, its
    Celery message unacknowledged, its lease standing until it expires."""
    owner = BotHeartbeat.objects.get(account=world.account).lease_owner
    pid = int(owner.split(":")[1])
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return pid


def lease_expires(world: BotWorld) -> None:
    """The dead worker's lease runs out (LEASE_TTL, 2 minutes), without the test waiting for it."""
    BotHeartbeat.objects.filter(account=world.account).update(lease_expires_at=timezone.now())


def held_requests(fake: FakeBybit, path: str, **match) -> int:
    return len(fake.requests_to(path, **match))


def topics() -> list[str]:
    """What the trader was told about trades and orders (the workers' own start and stop messages left out)."""
    return sorted(Notification.objects.exclude(topic__startswith="worker_").values_list("topic", flat=True))


def statuses() -> dict[str, str]:
    return {f"{o.leg}{o.action}": o.status for o in Order.objects.all()}


def crash_then_restart(world: BotWorld, fake: FakeBybit, *, path: str, symbol: str, at_kill: dict[str, str]
                       ) -> dict:
    """Hold the exchange's answer to the first ``path`` request on ``symbol`` (applied first), kill the worker
    while it waits for it (the database then holds the orders as ``at_kill``), then start a new worker process on
    the account's queue once the lease expired; returns the new worker's tick report."""
    fake.timeout_after_accept_next(path, symbol=symbol, delay_s=HOLD_S)
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        run_bot.apply_async((world.account.pk,), queue=world.account.queue_name)
        wait_for(lambda: held_requests(fake, path, symbol=symbol) >= 1, f"{path} on {symbol}")
        time.sleep(0.2)  # the request is applied under the fake's lock; the answer is held
        kill_the_lease_holder(world)
    assert statuses() == at_kill
    assert world.trade().state == PairTrade.State.OPENING
    lease_expires(world)
    fake.clear_faults()
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        return tick_in_worker(world)


@pytest.mark.parametrize(("path", "symbol", "at_kill", "step"), [
    (CREATE, "YYYUSDT", {"yopen": "planned", "xopen": "planned"},
     "the first leg sent and filled, its answer not yet written"),
    ("/v5/order/realtime", "YYYUSDT", {"yopen": "submitted", "xopen": "planned"},
     "the first leg's acknowledgment written, its fills and the second leg not yet"),
    (CREATE, "XXXUSDT", {"yopen": "filled", "xopen": "planned"},
     "the second leg sent and filled, its answer not yet written"),
])
def test_worker_killed_mid_opening_is_finished_by_the_next_worker(world, fake, path, symbol, at_kill, step):
    report = crash_then_restart(world, fake, path=path, symbol=symbol, at_kill=at_kill)
    assert report["status"] == "ok" and report["reconciled"], report
    trade = world.trade()
    assert trade.state == PairTrade.State.OPEN, (step, trade.state, trade.error)
    assert fake.position("YYYUSDT").size == Decimal("5") and fake.position("XXXUSDT").size == Decimal("-8.5")
    assert len(fake.orders()) == 2, [o.order_link_id for o in fake.orders()]
    assert_consistent(world, fake)
    assert topics() == ["trade_opened"], step




def test_a_worker_stopped_and_started_again_trades_at_its_first_tick(world, fake):
    """A planned restart of the account's worker (an upgrade, new keys: SIGTERM, then a new process): the stopped
    worker gives its lease back, so the new one trades at once. It kept it until it expired (2 minutes): every tick
    of the new worker answered "locked", and an exit decided meanwhile waited."""
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        assert tick_in_worker(world)["opened"] == 1
    world.next_bar(action=Signal.Action.EXIT)
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        report = tick_in_worker(world)
    assert report["status"] == "ok" and report["closed"] == 1, report
    assert world.trade().state == PairTrade.State.CLOSED
    assert_consistent(world, fake)

@pytest.mark.parametrize("symbol", ["YYYUSDT", "XXXUSDT"])
def test_worker_killed_mid_closing_is_finished_by_the_next_worker(world, fake, symbol):
    """Both legs' closes go out in one tick; the worker is killed while the exchange holds the answer to one of
    them (applied): the next worker finds it by its client id and closes the trade, with no second close sent."""
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        assert tick_in_worker(world)["opened"] == 1
    world.next_bar(action=Signal.Action.EXIT)
    fake.timeout_after_accept_next(CREATE, symbol=symbol, delay_s=HOLD_S)
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        run_bot.apply_async((world.account.pk,), queue=world.account.queue_name)
        wait_for(lambda: held_requests(fake, CREATE, symbol=symbol) >= 2, f"the close on {symbol}")
        time.sleep(0.2)
        kill_the_lease_holder(world)
    assert world.trade().state == PairTrade.State.CLOSING
    lease_expires(world)
    fake.clear_faults()
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        report = tick_in_worker(world)
    assert report["status"] == "ok", report
    trade = world.trade()
    assert trade.state == PairTrade.State.CLOSED and trade.realised_pnl is not None
    assert fake.position("YYYUSDT").size == 0 and fake.position("XXXUSDT").size == 0
    assert len(fake.orders()) == 4
    assert_consistent(world, fake)
    assert topics() == ["trade_closed", "trade_opened"]

def test_a_502_to_the_second_leg_that_filled_opens_the_trade_once(world, fake):
    fake.http_error_after_accept_next(CREATE, 502, symbol="XXXUSDT")
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        report = tick_in_worker(world)
    assert report["status"] == "ok", report
    assert world.trade().state == PairTrade.State.OPEN
    assert len(fake.orders(symbol="XXXUSDT")) == 1
    assert_consistent(world, fake)
    assert topics() == ["trade_opened"]


def test_one_tick_delivered_to_two_workers_trades_once(world, fake):
    """The same tick twice on the account's queue (a duplicated message, a redelivery) with two worker processes
    consuming it: the lease lets one trade; the other does nothing."""
    queue = world.account.queue_name
    with start_worker(queue, extra_env=WORKER_ENV), start_worker(queue, extra_env=WORKER_ENV):
        results = [run_bot.apply_async((world.account.pk,), queue=queue) for _ in range(2)]
        reports = [result.get(timeout=TASK_TIMEOUT_S) for result in results]
    assert "ok" in [r["status"] for r in reports] and sum(r["opened"] for r in reports) == 1, reports
    assert len(world.trades()) == 1 and len(fake.orders()) == 2
    assert_consistent(world, fake)
    assert topics() == ["trade_opened"]


def test_a_tick_delivered_late_after_a_halt_opens_nothing(world, fake):
    HaltFactory(account=world.account, reason="trader stops everything")
    with start_worker(world.account.queue_name, extra_env=WORKER_ENV):
        report = tick_in_worker(world)
    assert report["status"] == "ok" and report["opened"] == 0 and report["skipped"], report
    assert world.trades() == [] and fake.orders() == []


# What a connection cut mid-tick can take away: the database's on a server database (SQLite has no connection to
# cut), the exchange's everywhere.
CUTS = ["exchange", "database"] if settings.DATABASES["default"]["ENGINE"].endswith("mysql") else ["exchange"]


@pytest.mark.parametrize("cut", CUTS)
def test_a_connection_cut_while_the_second_leg_fills_is_recovered_by_the_next_tick(world, fake, cut):
    """The worker's connection to the database (or to the exchange) is cut while the exchange fills the second leg
    and holds its answer: the worker can't write (or receive) what happened. The next tick of the same worker, once
    the connection is back, finds the order by its client id and opens the trade; nothing is sent twice."""
    env = {**WORKER_ENV, "STATARB_EXCHANGE_TIMEOUT_MS": "10000"}
    target = ("127.0.0.1", urlsplit(fake.base_url).port)
    if cut == "database":
        database = urlsplit(session_database_url())
        target = (database.hostname, database.port or 3306)
    with TcpProxy(target) as proxy:
        if cut == "database":
            env["DATABASE_URL"] = database._replace(netloc=f"{database.netloc.rsplit(':', 1)[0]}:{proxy.port}").geturl()
        else:
            world.account.base_url_override = f"http://127.0.0.1:{proxy.port}"
            world.account.save()
        fake.timeout_after_accept_next(CREATE, symbol="XXXUSDT", delay_s=3)
        with start_worker(world.account.queue_name, extra_env=env):
            first = run_bot.apply_async((world.account.pk,), queue=world.account.queue_name)
            wait_for(lambda: held_requests(fake, CREATE, symbol="XXXUSDT") >= 1, "the second leg's order")
            proxy.cut()
            first.get(timeout=TASK_TIMEOUT_S, propagate=False)
            assert statuses() == {"yopen": "filled", "xopen": "planned" if cut == "database" else "unknown"}
            assert fake.position("XXXUSDT").size == Decimal("-8.5")  # the exchange filled it
            proxy.resume()
            report = tick_in_worker(world)
    assert report["status"] == "ok", report
    assert world.trade().state == PairTrade.State.OPEN
    assert len(fake.orders()) == 2
    assert_consistent(world, fake)
    assert topics() == ["trade_opened"]
