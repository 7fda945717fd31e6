"""Benchmark one bot tick (``execution.bot.tick.bot_tick``) of a paper account with 500 active pairs and 50 open
trades: its time and its number of queries.

Run from the repository root:  python benchmarks/bench_bot_tick.py
On MariaDB:                    python benchmarks/bench_bot_tick.py --database-url mysql://root@127.0.0.1:3306/statarb_bench

The market (``tests/execution/bot_market.py``, plain ORM): 150 instruments of the exchange id ``benchbot`` with hourly
candles (200 bars of history before the first traded bar), 500 active pairs on the account's level with a signal
on every bar (hold, but for the entries and exits below) and a rule state each, and 50 open trades on distinct
instruments, opened by the engine itself against the paper exchange, so their orders, fills, paper orders, paper
fills and paper positions are the real ones. The newest bar's signals are all "hold".

A tick is timed as the live task runs it (``bot_tick_live``): the stored market, the paper exchange priced from it
(``paper_exchange_for``), then ``bot_tick``. **The paper exchange is in-process and keeps its book in the same
database, so "exchange latency" is not separated out: the times include the paper exchange's database work**; on a
real exchange each exchange call adds its round trip instead. Cases, each ``--runs`` times (median and p95):
(a) steady state: lease held, reconciled a minute before, funding synced up to the previous tick (no settlement in
    between), nothing to open or close;
(b) reconciling: the lease taken fresh (a restart), so the tick also compares the trades with the exchange's
    positions;
(c) rotating: a new bar on which 5 open trades signal an exit and 5 free pairs an entry: the tick closes 5 trades
    and opens 5 (4 paper orders of 4 legs each way), not reconciling;
(d) funding: the first tick after a funding settlement (00:00, 08:00, 16:00 UTC): the paper exchange settles funding
    on every position and the bot records it per trade; nothing to open or close. Measured whenever case (c)'s
    clock is about to cross a settlement (so only a few runs).
Queries are counted with a ``connection.execute_wrapper`` (every statement sent, nothing else), times with
``time.perf_counter``. With ``--profile`` the script also prints a cProfile of one steady tick.

Database: by default a temporary SQLite file (deleted afterwards). With ``--database-url`` any URL Django reads; a
mysql:// database is created when missing and migrated. Rows of the ``benchbot`` exchange (instruments, candles,
pairs, signals, the account and its trades, paper book, notifications) are deleted before and after the run. The
engine selects entry signals by the account's level: the database should hold no other pairs on level 1 of the
exchange id ``benchbot`` (a dedicated database is simplest). Django runs with DEBUG=0 (no query log).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from _shared import (
    benchmark_database,
    command_line,
    database_description,
    django_setup,
    load_average,
    machine_description,
    print_row,
    print_table_head,
)

BENCH_EXCHANGE = "benchbot"
NAME = "bb"  # account "bb-paper", symbols BB0USDT, BB1USDT, ...
TARGET_STEADY_MS = 100.0
FUNDING_INTERVAL = timedelta(hours=8)
CASES = {
    "a": "(a) steady state",
    "b": "(b) reconciling (fresh lease)",
    "c": "(c) opens 5, closes 5",
    "d": "(d) first tick after a funding settlement",
}


def delete_bench_rows() -> None:
    from execution.models import ExchangeAccount, Fill, FundingPayment, Order, PairTrade
    from notifications.models import Notification
    from pairs.models import Instrument, Pair

    accounts = ExchangeAccount.objects.filter(exchange=BENCH_EXCHANGE)
    for account in accounts:
        Notification.objects.filter(text__startswith=f"[{account.name}]").delete()
    Fill.objects.filter(order__trade__account__in=accounts).delete()
    Order.objects.filter(trade__account__in=accounts).delete()
    FundingPayment.objects.filter(account__in=accounts).delete()
    PairTrade.objects.filter(account__in=accounts).delete()
    accounts.delete()  # heartbeat, paper book, halts, guard events cascade
    Pair.objects.filter(y_instrument__exchange=BENCH_EXCHANGE).delete()  # signals and rule states cascade
    Instrument.objects.filter(exchange=BENCH_EXCHANGE).delete()  # candles cascade


class QueryCounter:
    """Counts every statement the connection sends (a ``connection.execute_wrapper``)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def write_history(market, bars: int) -> tuple[int, int]:
    """Candles for every instrument and a hold signal for every pair on the ``bars`` bars before the market's first
    bar (only the engine's reads see them: the feed and the signal queries select by time)."""
    from execution.models import Signal
    from pairs.models import Candle
    from tests.execution.bot_market import HOUR, START

    first = START + HOUR  # the first bar the market wrote
    candles, signals = [], []
    for k in range(1, bars + 1):
        bar = first - timedelta(hours=k)
        for n, instrument in enumerate(market.instruments):
            price = 10 + n % 90
            candles.append(
                Candle(
                    instrument=instrument,
                    timeframe="1h",
                    open_time=bar,
                    open=price,
                    high=price,
                    low=price,
                    close=price,
                    volume=1000,
                )
            )
        signals.extend(
            Signal(pair=pair, timeframe="1h", bar_time=bar, zscore=0.5, spread=0.0, action=Signal.Action.HOLD)
            for pair in market.pairs
        )
    Candle.objects.bulk_create(candles, batch_size=2000)
    Signal.objects.bulk_create(signals, batch_size=2000)
    return len(candles), len(signals)


def summary(samples: list[float]) -> tuple[float, float, float, float]:
    """median, p95 (inclusive method), min, max."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0], samples[0]
    p95 = statistics.quantiles(samples, n=100, method="inclusive")[94]
    return statistics.median(samples), p95, min(samples), max(samples)


def parse_args() -> argparse.Namespace:
    """The command line; a trade holds two instruments of its own, so the market must have enough of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="database to run on (default: a temporary SQLite file), e.g. mysql://root@127.0.0.1:3306/statarb_bench",
    )
    parser.add_argument("--runs", type=int, default=20, help="runs of each case (default 20)")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--instruments", type=int, default=150)
    parser.add_argument("--trades", type=int, default=50)
    parser.add_argument("--history-bars", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one steady tick")
    args = parser.parse_args()
    if 2 * args.trades > args.instruments:
        raise SystemExit("every open trade needs two instruments of its own: --instruments >= 2 x --trades")
    return args


def main() -> None:
    args = parse_args()
    with benchmark_database("bench_bot_tick", args.database_url) as database_url:
        run(args, database_url)


class TickTimer:
    """Times ticks case by case (milliseconds and statements sent per tick) and remembers the last tick's clock, so
    case (d) can tell when the next tick crosses a funding settlement."""

    def __init__(self):
        self.timings: dict[str, list[float]] = {case: [] for case in CASES}
        self.queries: dict[str, list[int]] = {case: [] for case in CASES}
        self.last_now = None

    def timed(self, case: str, market, now, check) -> None:
        """One tick at ``now``, timed and its statements counted; a tick that isn't ok or fails ``check`` (it did
        other work than the case means to measure) stops the benchmark."""
        from django.db import connection

        counter = QueryCounter()
        with connection.execute_wrapper(counter):
            start = time.perf_counter()
            report = market.tick(now=now)
            elapsed = (time.perf_counter() - start) * 1000
        if report.status != "ok" or not check(report):
            raise SystemExit(f"case {case}: unexpected tick {report}")
        self.timings[case].append(elapsed)
        self.queries[case].append(counter.count)
        self.last_now = now


def build_market(args):
    """The market the ticks run on, warmed up by one reconciling tick: (market, (history candles, history signals),
    set-up seconds). Its own time, apart from the ticks'."""
    from tests.execution.bot_market import BotMarket

    start = time.perf_counter()
    market = BotMarket(exchange=BENCH_EXCHANGE, name=NAME)
    market.grow(instruments=args.instruments, pairs=args.pairs, trades=args.trades)
    history = write_history(market, args.history_bars)
    market.next_bar()
    if not market.tick().reconciled:  # reconciles (an hour since the opening tick) and syncs funding
        raise SystemExit("the warm-up tick did not reconcile")
    return market, history, time.perf_counter() - start


def book_counts(account) -> dict[str, int]:
    """What the account holds before the runs (the report shows it, so a reader sees the book the ticks read)."""
    from execution.models import Fill, Order, PairTrade, PaperOrder, PaperPosition

    return {
        "open trades": PairTrade.objects.filter(account=account, state=PairTrade.State.OPEN).count(),
        "orders": Order.objects.filter(trade__account=account).count(),
        "fills": Fill.objects.filter(order__trade__account=account).count(),
        "paper orders": PaperOrder.objects.filter(account=account).count(),
        "paper positions": PaperPosition.objects.filter(account=account).exclude(qty=0).count(),
    }


def run_steady(market, timer: TickTimer, runs: int) -> None:
    """(a) steady state, 10 s apart, each a minute after a reconciliation."""
    for k in range(runs):
        now = market.now(60 + 10 * k)
        market.mark_reconciled(now - timedelta(minutes=1))
        timer.timed("a", market, now, lambda r: not r.reconciled and r.opened == r.closed == 0)


def profile_steady_tick(market, timer: TickTimer, runs: int) -> str:
    """cProfile's top 30 (cumulative) of one more steady tick, after the timed ones (the profiler would slow them)."""
    now = market.now(60 + 10 * runs)
    market.mark_reconciled(now - timedelta(minutes=1))
    profiler = cProfile.Profile()
    profiler.enable()
    market.tick(now=now)
    profiler.disable()
    timer.last_now = now
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def run_reconciling(market, timer: TickTimer, runs: int) -> None:
    """(b) reconciling on a fresh lease (as after a restart), on the clock after the steady ticks."""
    for k in range(runs):
        market.release_lease()
        timer.timed(
            "b",
            market,
            market.now(60 + 10 * (runs + 1) + 10 * k),
            lambda r: r.reconciled and not r.mismatches and r.opened == r.closed == 0,
        )


def run_rotating(market, timer: TickTimer, runs: int) -> None:
    """(c) 5 closes and 5 opens, one bar each; (d) the settlement ticks met on the way (a tick on the settlement's
    own clock before the rotating one, so (c) never includes funding)."""
    from tests.execution.bot_market import HOUR

    for _ in range(runs):
        tick_at = market.bar + 2 * HOUR + timedelta(seconds=90)  # the tick after rotate's bar
        settlement = settlement_between(timer.last_now, tick_at)
        if settlement is not None:
            now = settlement + timedelta(seconds=30)
            market.mark_reconciled(now - timedelta(minutes=1))
            timer.timed("d", market, now, lambda r: not r.reconciled and r.opened == r.closed == 0)
        market.rotate(opens=5, closes=5)
        now = market.now(90)
        market.mark_reconciled(now - timedelta(minutes=1))
        timer.timed("c", market, now, lambda r: not r.reconciled and r.opened == 5 and r.closed == 5)


def run(args, database_url: str) -> None:
    """Set up the market, run the cases in order (each case's clock follows the previous one's) and report; the
    benchmark's rows are deleted before and after, even when a case fails."""
    started = time.perf_counter()
    django_setup(database_url)
    import logging

    logging.getLogger("execution").setLevel(logging.WARNING)  # the paper exchange logs every fill at INFO
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    delete_bench_rows()
    timer = TickTimer()
    profile_text = ""
    try:
        market, history, setup_seconds = build_market(args)
        book = book_counts(market.account)
        run_steady(market, timer, args.runs)
        if args.profile:
            profile_text = profile_steady_tick(market, timer, args.runs)
        run_reconciling(market, timer, args.runs)
        run_rotating(market, timer, args.runs)
        description = database_description()
    finally:
        delete_bench_rows()

    print_header(args, description, market, history, book, setup_seconds)
    print_cases(timer)
    print(f"\nWhole benchmark: {time.perf_counter() - started:.0f} s.")
    if profile_text:
        print("\n### cProfile of one steady tick (cumulative)\n\n```")
        print(profile_text.strip())
        print("```")


def print_header(args, description: str, market, history: tuple[int, int], book: dict[str, int],
                 setup_seconds: float) -> None:
    """The report's title and what the times depend on: command, database, machine and its load, the market."""
    print(f"## Bot tick: {args.pairs} active pairs, {args.trades} open trades (paper account)\n")
    print(f"Command: `{command_line('benchmarks/bench_bot_tick.py')}`  ")
    print(f"Database: {description}  ")
    print(f"Machine: {machine_description()}; load average at the end {load_average()}  ")
    print(
        f"Market: {len(market.instruments)} instruments, {len(market.pairs)} active pairs, {history[0]:,} history "
        f"candles and {history[1]:,} history signals; the book before the runs: "
        + ", ".join(f"{v} {k}" for k, v in book.items())
        + f"; set-up {setup_seconds:.1f} s (not timed below)  "
    )
    print("Times include the paper exchange, which runs in-process on the same database (no network).\n")


def print_cases(timer: TickTimer) -> None:
    """One row per case that ran: median, p95, min, max (ms), the statements per tick, and the steady target."""
    print_table_head(["case", "runs", "median (ms)", "p95 (ms)", "min (ms)", "max (ms)", "queries", "target"],
                     "lrrrrrrl")
    for case, label in CASES.items():
        if not timer.timings[case]:
            continue
        median, p95, low, high = summary(timer.timings[case])
        counts = sorted(set(timer.queries[case]))
        count_text = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
        target = ""
        if case == "a":
            target = f"< {TARGET_STEADY_MS:.0f} ms " + ("ok" if median < TARGET_STEADY_MS else "MISSED")
        print_row(label, len(timer.timings[case]), f"{median:.1f}", f"{p95:.1f}", f"{low:.1f}", f"{high:.1f}",
                  count_text, target)


def settlement_between(after, until):
    """The first funding settlement time t (a multiple of 8 hours since the epoch) with after < t <= until."""
    from pairs.marketdata.funding import settlement_times

    return next(settlement_times(after, until, int(FUNDING_INTERVAL.total_seconds() // 60)), None)


if __name__ == "__main__":
    main()
