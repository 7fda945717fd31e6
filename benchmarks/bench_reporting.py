"""Benchmark the reporting reads over many closed trades of one account: the performance summary
(``monitoring.selectors.scope_performance``), the equity curve (``scope_equity``), the same two through the API
(``GET /api/v1/performance/?account=...`` and ``/api/v1/equity/?account=...``: the scope's default period is looked
up on each request) and the first page of the trades list (``GET /api/v1/trades/?account=...``), each ``--runs``
times (median and p95), plus the summary and the curve aggregated from the trades (``rollup=False``: what the daily
trade totals save), fewer runs. The target (issue #16): p95 under 150 ms with 1,000,000 trades on MariaDB.

Run from the repository root:  python benchmarks/bench_reporting.py --trades 1000000 \\
                                   --database-url mysql://root@127.0.0.1:3306/statarb_bench

The trades (plain bulk inserts): one paper account of the exchange id ``benchreport``, 20 pairs, ``--trades``
closed trades five minutes apart (each held 50 minutes, so about ten are open at any moment), the last one closed
an hour before the run: every trade is in the default scope (first trade to now). PnLs are drawn from a seeded
normal distribution; every day has a daily PnL snapshot with an unrealised PnL (the marks). The trades are inserted
around the daily totals' per-batch refresh, then the totals are filled once by ``daily_totals_rebuild`` (what
``manage.py rebuild_daily_totals`` and the migration run; timed). Its rows are deleted before and after the run;
with ``--keep`` they stay, and the next run with ``--keep`` and the same ``--trades`` reuses them instead of inserting
them again (the seeding takes minutes at 1,000,000; the totals are rebuilt when missing). Default database: a
temporary SQLite file.
"""

from __future__ import annotations

import argparse
import importlib
import random
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal

from _shared import (
    benchmark_database,
    command_line,
    database_description,
    django_setup,
    load_average,
    machine_description,
)

EXCHANGE = "benchreport"
BATCH = 10_000  # rows per INSERT: one statement stays well under MariaDB's max_allowed_packet


def _cleanup() -> None:
    from execution.models import ExchangeAccount, PairTrade
    from pairs.models import Instrument, Pair
    from risk.models import DailyPnlSnapshot

    DailyPnlSnapshot.objects.filter(account__exchange=EXCHANGE).delete()
    # The daily totals go with the account; deleting the trades around their refresh spares reading them all.
    PairTrade._base_manager.filter(account__exchange=EXCHANGE).delete()
    ExchangeAccount.objects.filter(exchange=EXCHANGE).delete()
    Pair.objects.filter(y_instrument__exchange=EXCHANGE).delete()
    Instrument.objects.filter(exchange=EXCHANGE).delete()


def _reusable(n_trades: int):
    """The account a previous ``--keep`` run left with exactly ``n_trades`` trades, else None."""
    from execution.models import ExchangeAccount, PairTrade

    account = ExchangeAccount.objects.filter(exchange=EXCHANGE).first()
    if account is not None and PairTrade.objects.filter(account=account).count() == n_trades:
        return account
    return None


def _world(n_trades: int):
    from django.utils import timezone

    from execution.models import ExchangeAccount, PairTrade
    from pairs.models import Instrument, Level, Pair
    from risk.models import DailyPnlSnapshot

    level = Level.objects.get(number=1)
    instruments = [Instrument.objects.create(exchange=EXCHANGE, symbol=f"B{i}USDT", base=f"B{i}", quote="USDT",
                                             settle="USDT", ccxt_symbol=f"B{i}/USDT:USDT") for i in range(40)]
    pairs = [Pair.objects.create(y_instrument=instruments[2 * i], x_instrument=instruments[2 * i + 1], level=level,
                                 hedge_ratio=1.0) for i in range(20)]
    account = ExchangeAccount.objects.create(name="bench-report", exchange=EXCHANGE, level=level,
                                             capital=Decimal("1000000"), per_trade_budget=Decimal("500"),
                                             enabled=False)
    rng = random.Random(16)
    step = timedelta(minutes=5)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1) - n_trades * step
    reasons = ["exit_signal", "stop", "max_holding"]
    for first in range(0, n_trades, BATCH):
        # Around the daily totals' refresh (PairTrade.objects would refresh each batch's days): one rebuild after.
        PairTrade._base_manager.bulk_create([
            PairTrade(account=account, pair=pairs[i % 20], side="long_spread", state="closed", hedge_ratio=1.0,
                      y_qty=Decimal(1), x_qty=Decimal(1), opened_at=start + i * step - timedelta(minutes=50),
                      closed_at=start + i * step, exit_reason=reasons[i % 3],
                      realised_pnl=Decimal(f"{rng.gauss(2, 20):.4f}"), fees=Decimal("0.5"), funding=Decimal("-0.01"))
            for i in range(first, min(first + BATCH, n_trades))
        ])
    days = [start.date() + timedelta(days=d) for d in range((start + n_trades * step).date().toordinal()
                                                               - start.date().toordinal() + 1)]
    DailyPnlSnapshot.objects.bulk_create([
        DailyPnlSnapshot(account=account, date=day, starting_equity=account.capital, ending_equity=account.capital,
                         peak_equity=account.capital, unrealised_pnl=Decimal(f"{rng.gauss(0, 30):.4f}"))
        for day in days
    ], batch_size=BATCH)
    return account


def _fill_totals(account) -> float | None:
    """Fill the account's daily trade totals when they are missing: seconds taken, or None when they were there."""
    from execution.models import DailyTradeTotals
    from execution.services.daily_totals import daily_totals_rebuild

    if DailyTradeTotals.objects.filter(account=account).exists():
        return None
    began = time.perf_counter()
    daily_totals_rebuild(account_ids=[account.pk])
    return time.perf_counter() - began


def _same_figures(scope) -> str:
    """Whether the summary from the daily totals equals the one aggregated from the trades, figure by figure."""
    from dataclasses import asdict

    from monitoring.selectors import scope_performance

    rolled, direct = asdict(scope_performance(scope)), asdict(scope_performance(scope, rollup=False))
    differ = [name for name, value in rolled.items() if value != direct[name]]
    return "every figure equal to the one from the trades" if not differ else f"figures that differ: {differ}"


def _time(fn, runs: int) -> tuple[float, float]:
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - began)
    seconds.sort()
    p95 = seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))]
    return statistics.median(seconds) * 1000, p95 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--direct-runs", type=int, default=3,
                        help="runs of the reads aggregated from the trades, for comparison (0: none)")
    parser.add_argument("--database-url")
    parser.add_argument("--keep", action="store_true",
                        help="keep the inserted rows, and reuse those a previous --keep run left")
    args = parser.parse_args()
    with benchmark_database("bench_reporting", args.database_url) as url:
        django_setup(url)
        # The web server's own start-up (statarb_site.wsgi): every view imported, then the loaded application
        # frozen out of the garbage collector's full collections, as in gunicorn.
        importlib.import_module("statarb_site.wsgi")
        from django.contrib.auth import get_user_model
        from rest_framework.test import APIRequestFactory, force_authenticate

        import statarb_site.wsgi  # noqa: F401
        from execution.api import TradeListApi
        from execution.models import DailyTradeTotals
        from monitoring.api import EquityListApi, PerformanceApi
        from monitoring.selectors import performance_scope, scope_equity, scope_performance

        account = _reusable(args.trades) if args.keep else None
        began = time.perf_counter()
        if account is None:
            _cleanup()
            account = _world(args.trades)
        loaded = time.perf_counter() - began
        rebuilt = _fill_totals(account)
        user, _ = get_user_model().objects.get_or_create(username="bench-report", is_superuser=True)

        def api(view_class, path):
            view = view_class.as_view()

            def get():
                request = APIRequestFactory().get(path, {"account": account.name}, HTTP_HOST="localhost")
                force_authenticate(request, user=user)
                response = view(request)
                response.render()
                assert response.status_code == 200, response.status_code
            return get

        scope = performance_scope(account=account)
        cases = {
            "performance summary": lambda: scope_performance(scope),
            "equity curve": lambda: scope_equity(scope),
            "GET /api/v1/performance/?account=": api(PerformanceApi, "/api/v1/performance/"),
            "GET /api/v1/equity/?account=": api(EquityListApi, "/api/v1/equity/"),
            "trades list, first page": api(TradeListApi, "/api/v1/trades/"),
        }
        direct = {
            "performance summary from the trades": lambda: scope_performance(scope, rollup=False),
            "equity curve from the trades": lambda: scope_equity(scope, rollup=False),
        }

        try:
            print(f"## Reporting reads, {args.trades:,} closed trades\n")
            seeded = f"inserted in {loaded:.0f} s" if loaded > 1 else "kept from a previous run"
            totals = DailyTradeTotals.objects.filter(account=account).count()
            filled = f"rebuilt in {rebuilt:.1f} s" if rebuilt is not None else "kept"
            print(f"{machine_description()}; {database_description()}; load average {load_average()}; "
                  f"{args.trades:,} trades {seeded}; daily totals {totals:,} rows, {filled}; "
                  f"{args.runs} runs each.\n")
            print("| read | median (ms) | p95 (ms) | target p95 150 ms |\n|---|---:|---:|---|")
            for name, fn in cases.items():
                median, p95 = _time(fn, args.runs)
                print(f"| {name} | {median:.0f} | {p95:.0f} | {'met' if p95 < 150 else 'NOT met'} |")
            for name, fn in direct.items() if args.direct_runs else ():
                median, p95 = _time(fn, args.direct_runs)
                print(f"| {name} ({args.direct_runs} runs) | {median:.0f} | {p95:.0f} | for comparison |")
            print(f"\nload average after: {load_average()}; {_same_figures(scope)}")
            print(f"\nCommand: `{command_line(sys.argv[0])}`")
        finally:
            if not args.keep:
                _cleanup()
                user.delete()


if __name__ == "__main__":
    main()
