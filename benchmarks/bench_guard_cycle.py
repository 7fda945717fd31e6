"""Benchmark one guard cycle (``monitoring.guard.cycle.guard_run``) over 20 paper accounts with 50 open trades each:
its time and its number of statements, against the target of 200 ms beside exchange latency.

Run from the repository root:  python benchmarks/bench_guard_cycle.py
On MariaDB:                    python benchmarks/bench_guard_cycle.py --database-url mysql://root@127.0.0.1:3306/statarb_bench

The world (plain ORM): 2 instruments per trade with a candle on the newest closed bar, each trade a long spread with
both legs filled (an order and a fill per leg), 10 finished trades per account (half of them losses), a guard
state and a snapshot of the previous day per account, default limits (every detector on). Paper accounts, so no
exchange is called: the time is the guard's own work ("beside exchange latency"); a demo or real account adds its
two exchange reads (balance, positions). The first cycle (which creates the guard states and today's snapshots) is
not timed; then ``--runs`` cycles, one minute apart on the guard's clock, are timed with ``time.perf_counter`` and
their statements counted with a ``connection.execute_wrapper``. The count is also taken with a quarter of the
accounts: it must be the same (a fixed number of statements however many accounts and trades).

Database: by default a temporary SQLite file (deleted afterwards); with ``--database-url`` a mysql:// database,
created when missing and migrated; the rows of the exchange id ``benchguard`` are deleted before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from _shared import (
    benchmark_database,
    command_line,
    database_description,
    django_setup,
    load_average,
    machine_description,
)

BENCH_EXCHANGE = "benchguard"
TARGET_MS = 200.0
NOW = datetime(2021, 3, 1, 13, tzinfo=UTC)


class QueryCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def delete_bench_rows() -> None:
    from execution.models import ExchangeAccount, Fill, Order, PairTrade
    from pairs.models import Instrument, Pair
    from risk.models import DailyPnlSnapshot, GuardEvent, Halt

    accounts = ExchangeAccount.objects.filter(exchange=BENCH_EXCHANGE)
    Fill.objects.filter(order__trade__account__in=accounts).delete()
    Order.objects.filter(trade__account__in=accounts).delete()
    PairTrade.objects.filter(account__in=accounts).delete()
    for model in (DailyPnlSnapshot, GuardEvent, Halt):
        model.objects.filter(account__in=accounts).delete()
    accounts.delete()
    Pair.objects.filter(y_instrument__exchange=BENCH_EXCHANGE).delete()
    Instrument.objects.filter(exchange=BENCH_EXCHANGE).delete()


def build_world(n_accounts: int, n_trades: int) -> list:
    from execution.models import ExchangeAccount, Fill, Order, PairTrade
    from pairs.models import Candle, Instrument, Level, Pair
    from risk.models import DailyPnlSnapshot

    level = Level.objects.get(number=1)
    bar = NOW - timedelta(hours=1)
    instruments = Instrument.objects.bulk_create([
        Instrument(exchange=BENCH_EXCHANGE, symbol=f"BG{n}USDT", ccxt_symbol=f"BG{n}/USDT:USDT", base=f"BG{n}",
                   quote="USDT", settle="USDT", tick_size=Decimal("0.01"), qty_step=Decimal("0.01"),
                   min_qty=Decimal("0.01"), min_notional=Decimal("5"))
        for n in range(2 * n_trades * n_accounts)
    ])
    Candle.objects.bulk_create([Candle(instrument=i, timeframe="1h", open_time=bar, open=100, high=100, low=100,
                                       close=100 + n % 7, volume=1) for n, i in enumerate(instruments)])
    pairs = Pair.objects.bulk_create([
        Pair(y_instrument=instruments[2 * n], x_instrument=instruments[2 * n + 1], level=level, hedge_ratio=0.9)
        for n in range(n_trades * n_accounts)
    ])
    accounts = [ExchangeAccount.objects.create(name=f"bg-{n}", exchange=BENCH_EXCHANGE, level=level,
                                               capital=Decimal(10000), per_trade_budget=Decimal(100))
                for n in range(n_accounts)]
    trades, orders, fills, finished = [], [], [], []
    for a, account in enumerate(accounts):
        for t in range(n_trades):
            pair = pairs[a * n_trades + t]
            trades.append(PairTrade(account=account, pair=pair, side="long_spread", state="open",
                                    hedge_ratio=0.9, y_qty=Decimal(1), x_qty=Decimal("0.9"),
                                    state_changed_at=NOW - timedelta(hours=3), opened_at=NOW - timedelta(hours=3)))
        for t in range(10):
            finished.append(PairTrade(account=account, pair=pairs[a * n_trades], side="long_spread",
                                      state="closed", hedge_ratio=0.9, y_qty=1, x_qty=1,
                                      realised_pnl=Decimal(5 if t % 2 else -4), closed_at=NOW - timedelta(days=2,
                                                                                                           hours=t)))
    PairTrade.objects.bulk_create(trades + finished)
    trades = list(PairTrade.objects.filter(account__in=accounts, state="open").select_related("pair"))
    for trade in trades:
        for leg, instrument_id, side in (("y", trade.pair.y_instrument_id, "buy"),
                                         ("x", trade.pair.x_instrument_id, "sell")):
            orders.append(Order(trade=trade, instrument_id=instrument_id, leg=leg, action="open", side=side,
                                qty=Decimal(1), filled_qty=Decimal(1), avg_price=Decimal(100), status="filled",
                                client_order_id=f"bg-{trade.pk}-{leg}", planned_at=NOW - timedelta(hours=3),
                                submitted_at=NOW - timedelta(hours=3), reference_price=Decimal(100)))
    Order.objects.bulk_create(orders)
    for order in Order.objects.filter(trade__account__in=accounts):
        fills.append(Fill(order=order, exchange_fill_id=f"f-{order.pk}", qty=Decimal(1), price=Decimal(100),
                          fee=Decimal("0.05"), filled_at=NOW - timedelta(hours=3)))
    Fill.objects.bulk_create(fills)
    DailyPnlSnapshot.objects.bulk_create([
        DailyPnlSnapshot(account=a, date=NOW.date() - timedelta(days=1), starting_equity=10000,
                         ending_equity=10010, peak_equity=10010) for a in accounts])
    return accounts


def cycle(accounts, now) -> tuple[float, int]:
    from django.db import connection

    from core.clock import ManualClock
    from monitoring.guard.cycle import guard_run
    from pairs.market import StoredMarket

    counter = QueryCounter()
    market = StoredMarket(timeframe="1h", clock=ManualClock(now))
    with connection.execute_wrapper(counter):
        started = time.perf_counter()
        guard_run(now=now, market=market, accounts=accounts, live=True)
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--trades", type=int, default=50)
    args = parser.parse_args()
    with benchmark_database("bench_guard_cycle", args.database_url) as database_url:
        django_setup(database_url)
        delete_bench_rows()
        try:
            run(args)
        finally:
            delete_bench_rows()


def run(args) -> None:
    from execution.models import BotHeartbeat

    accounts = build_world(args.accounts, args.trades)
    BotHeartbeat.objects.bulk_create([BotHeartbeat(account=a, beat_at=NOW) for a in accounts])
    cycle(accounts, NOW)  # creates the guard states and today's snapshots
    times, counts = [], []
    for k in range(1, args.runs + 1):
        elapsed, count = cycle(accounts, NOW + timedelta(minutes=k))
        times.append(elapsed)
        counts.append(count)
    _, few = cycle(accounts[: max(1, len(accounts) // 4)], NOW + timedelta(minutes=args.runs + 1))
    p95 = statistics.quantiles(times, n=100, method="inclusive")[94] if len(times) > 1 else times[0]
    print(f"machine: {machine_description()}; load {load_average()}")
    print(f"database: {database_description()}")
    print(f"command: {command_line('bench_guard_cycle.py')}")
    print(f"{args.accounts} accounts x {args.trades} open trades, {args.runs} cycles")
    print(f"cycle: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, min {min(times):.1f} ms, max "
          f"{max(times):.1f} ms (target p95 < {TARGET_MS:.0f} ms: {'met' if p95 < TARGET_MS else 'NOT met'})")
    print(f"statements per cycle: {sorted(set(counts))} with {args.accounts} accounts, {few} with "
          f"{max(1, args.accounts // 4)} (constant: {'yes' if set(counts) == {few} else 'NO'})")


if __name__ == "__main__":
    main()
