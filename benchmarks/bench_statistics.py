"""Benchmark the statistics + grading service (``ladder.services.pair_statistics_update``) end to end.

Run from the repository root:  python benchmarks/bench_statistics.py
On MariaDB:                    python benchmarks/bench_statistics.py --database-url mysql://root@127.0.0.1:3306/statarb_bench8

Data: the 100 symbols of ../shared/data/binance-usdt-1h-2021 that cover the whole range (5,482 hourly bars),
imported in place with ``candles_import_directory`` into instruments of the exchange id ``bench8``.

Pairs: the first 5,000 ordered pairs of those symbols (row-major: symbol 0 against every other, then symbol 1,
...), at level 0, active, with the "latest test" values the screen would store, computed on the last 2,000 bars
(``price_window`` from the database): hedge ratio, intercept, ADF statistic/lag and p-value from
``engle_granger_batch``, Benjamini-Hochberg q-values over the 5,000 p-values, spread mean, std (ddof=1) and
half-life of the residuals. Strategy configuration: lookback 2,000 bars, walk-forward 1,000 bars, z-score window
500 bars (3,500 bars read), the other parameters at their defaults; the ladder is the seeded one (migration 0002).

Timed: ``pair_statistics_update`` twice. Run 1 writes every statistics row and moves the pairs that qualify (each
move audited in its own transaction); run 2 (same data) rewrites the rows and should move nothing. Phases are
timed by wrapping module-level functions of ``ladder.services`` and ``pairs.services.evidence`` (no change to
their code).

Database: by default a temporary SQLite file (deleted afterwards). With ``--database-url`` any URL Django reads,
e.g. MariaDB; a mysql:// database is created when missing and migrated. The benchmark deletes the rows of its own
exchange before and after; because the service grades every pair of the timeframe whatever its exchange, it
refuses to run on a database holding other pairs. Django runs with DEBUG=0 (no query log).

Single-threaded BLAS (the thread variables are set to 1 before numpy loads), as the Celery workers run.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _shared import (  # noqa: E402
    DEFAULT_DATA_DIR,
    benchmark_database,
    database_description,
    django_setup,
    instrument_phases,
    peak_rss_mib,
)

BENCH_EXCHANGE = "bench8"
TIMEFRAME = "1h"
N_PAIRS = 5000
LOOKBACK_BARS, VALIDATION_BARS, ZSCORE_WINDOW_BARS = 2000, 500, 500
TARGET_SECONDS = 60.0
# Wrapped in ladder.services (L) and pairs.services.evidence (E): (module, attribute, label), in report order.
PHASES = (
    ("L", "gradable_pairs", "load pairs (gradable_pairs)"),
    ("L", "backtest_windows", "backtests in sample and validation (backtest_windows)"),
    ("E", "price_window", "  of which price windows (price_window x2)"),
    ("E", "adf_fixed_lag", "  of which recent ADF (adf_fixed_lag)"),
    ("L", "live_statistics", "live statistics (live_statistics)"),
    ("L", "grade", "grading decisions (grade)"),
    ("L", "pair_set_level", "level moves + audit (pair_set_level)"),
    ("L", "pair_statistics_store", "statistics upsert (pair_statistics_store)"),
)






def full_range_symbols(data_dir: Path) -> list[str]:
    """Symbols whose file starts at the earliest bar of the directory (the files all end on the same bar)."""
    import pandas as pd

    from pairs.marketdata.files import candle_files

    firsts = {symbol: int(pd.read_csv(path, usecols=["timestamp"], nrows=1)["timestamp"].iloc[0])
              for symbol, path in candle_files(data_dir).items()}
    earliest = min(firsts.values())
    return sorted(symbol for symbol, first in firsts.items() if first == earliest)


def delete_bench_rows() -> None:
    from execution.models import Fill, Order, PairTrade
    from pairs.models import Instrument, LevelChange, Pair, PairStatistics

    pairs = Pair.objects.filter(y_instrument__exchange=BENCH_EXCHANGE) | Pair.objects.filter(
        x_instrument__exchange=BENCH_EXCHANGE)
    Fill.objects.filter(order__trade__pair__in=pairs).delete()
    Order.objects.filter(trade__pair__in=pairs).delete()
    PairTrade.objects.filter(pair__in=pairs).delete()
    LevelChange.objects.filter(pair__in=pairs).delete()
    PairStatistics.objects.filter(pair__in=pairs).delete()
    pairs.delete()
    Instrument.objects.filter(exchange=BENCH_EXCHANGE).delete()  # candles cascade


def create_pairs(symbols: list[str]) -> int:
    """The first N_PAIRS ordered pairs with the screen's latest-test values on the formation window (the
    LOOKBACK_BARS bars before the last VALIDATION_BARS)."""
    import numpy as np

    from pairs.models import Instrument, Level, Pair
    from pairs.quant.cointegration import all_ordered_pairs, engle_granger_batch
    from pairs.quant.multiple_testing import benjamini_hochberg
    from pairs.quant.spread import half_life, pair_spreads
    from pairs.selectors import price_window

    instruments = list(Instrument.objects.filter(exchange=BENCH_EXCHANGE, symbol__in=symbols))
    window = price_window(instruments=instruments, timeframe=TIMEFRAME, bars=LOOKBACK_BARS + VALIDATION_BARS)
    if window.symbols != symbols:
        raise SystemExit(f"the price window left out {window.excluded}")
    log_prices = np.log(window.closes[:LOOKBACK_BARS])
    pairs = all_ordered_pairs(len(symbols))[:N_PAIRS]
    eg = engle_granger_batch(log_prices, pairs)
    qvalues = benjamini_hochberg(eg.pvalue)
    spreads = pair_spreads(log_prices, eg.y_index, eg.x_index, eg.hedge_ratio, eg.intercept)
    means, stds, half_lives = spreads.mean(axis=0), spreads.std(axis=0, ddof=1), half_life(spreads)
    by_id = {i.pk: i for i in instruments}
    entry = Level.objects.get(number=0)
    rows = []
    for k, (y, x) in enumerate(pairs):
        hl = float(half_lives[k])
        rows.append(Pair(
            y_instrument=by_id[window.instrument_ids[y]], x_instrument=by_id[window.instrument_ids[x]],
            timeframe=TIMEFRAME, status=Pair.Status.ACTIVE, level=entry,
            hedge_ratio=float(eg.hedge_ratio[k]), intercept=float(eg.intercept[k]), adf_stat=float(eg.adf_stat[k]),
            adf_lag=int(eg.lag[k]), pvalue=float(eg.pvalue[k]), qvalue=float(qvalues[k]),
            half_life_bars=hl if np.isfinite(hl) else None, spread_mean=float(means[k]), spread_std=float(stds[k]),
        ))
    Pair.objects.bulk_create(rows, batch_size=1000)
    return len(rows)






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None,
                        help="database to run on (default: a temporary SQLite file), e.g. "
                             "mysql://root@127.0.0.1:3306/statarb_bench8")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        raise SystemExit(f"no candle data at {args.data_dir}")

    with benchmark_database("bench_statistics", args.database_url) as database_url:
        run(args, database_url)


def run(args, database_url: str) -> None:
    django_setup(database_url)
    import numpy as np

    import ladder.services as statistics
    import pairs.services.evidence as evidence
    from pairs.models import LevelChange, Pair, PairStatistics, StrategyConfig
    from pairs.services.market_data import candles_import_directory

    others = Pair.objects.filter(timeframe=TIMEFRAME).exclude(y_instrument__exchange=BENCH_EXCHANGE)
    if others.exists():
        raise SystemExit("the database holds other pairs, which the service would grade too: use a dedicated one")
    delete_bench_rows()
    try:
        symbols = full_range_symbols(args.data_dir)
        start = time.perf_counter()
        summary = candles_import_directory(directory=args.data_dir, timeframe=TIMEFRAME, exchange=BENCH_EXCHANGE,
                                           symbols=symbols)
        import_seconds = time.perf_counter() - start
        if summary.failed:
            raise SystemExit(f"import failed: {[(f.symbol, f.error) for f in summary.failed]}")

        start = time.perf_counter()
        n_pairs = create_pairs(symbols)
        pairs_seconds = time.perf_counter() - start

        config = StrategyConfig.current()
        config.exchange, config.timeframe = BENCH_EXCHANGE, TIMEFRAME
        config.lookback_bars, config.validation_bars = LOOKBACK_BARS, VALIDATION_BARS
        config.zscore_window_bars = ZSCORE_WINDOW_BARS
        config.save()

        seconds = {name: 0.0 for _, name, _ in PHASES}
        instrument_phases(statistics, [name for module, name, _ in PHASES if module == "L"], seconds)
        instrument_phases(evidence, [name for module, name, _ in PHASES if module == "E"], seconds)
        runs = []
        for _ in range(2):
            for name in seconds:
                seconds[name] = 0.0
            changes_before = LevelChange.objects.count()
            start = time.perf_counter()
            outcome = statistics.pair_statistics_update(config=config)
            total = time.perf_counter() - start
            data = outcome.as_json()
            runs.append({
                "seconds": total, "phases": dict(seconds), "graded": data["n_pairs"],
                "rows": PairStatistics.objects.filter(pair__y_instrument__exchange=BENCH_EXCHANGE).count(),
                "promoted": data["promoted"], "demoted": data["demoted"],
                "level_changes": LevelChange.objects.count() - changes_before,
                "validation_trades": int(sum((p["validation"] or {}).get("trades") or 0 for p in data["pairs"])),
            })
        validated = PairStatistics.objects.filter(window=PairStatistics.Window.VALIDATION,
                                            pair__y_instrument__exchange=BENCH_EXCHANGE)
        pf = np.array([s for s in validated.values_list("profit_factor", flat=True) if s is not None])
        description = database_description()
    finally:
        delete_bench_rows()

    command = shlex.join([Path(sys.executable).name, "benchmarks/bench_statistics.py", *sys.argv[1:]])
    print(f"## pair_statistics_update: {n_pairs:,} pairs x {LOOKBACK_BARS:,} bars\n")
    print(f"Command: `{command}`  ")
    print(f"Database: {description}  ")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, single-threaded BLAS  ")
    print(f"Setup (not timed below): import of {len(symbols)} full-range symbols ({summary.rows:,} candle rows) "
          f"{import_seconds:.1f} s; {n_pairs:,} pairs with Engle-Granger values "
          f"{pairs_seconds:.1f} s  ")
    print(f"Windows: in sample the {LOOKBACK_BARS:,}-bar formation window, validation the {VALIDATION_BARS:,} bars "
          f"after it, both with the formation fit frozen ({LOOKBACK_BARS + VALIDATION_BARS:,} bars read)\n")
    print("| run | pairs | bars | seconds | rows written | promotions | demotions | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for k, r in enumerate(runs, 1):
        verdict = "ok" if r["seconds"] < TARGET_SECONDS else "MISSED"
        print(f"| {k} | {r['graded']:,} | {LOOKBACK_BARS:,} | {r['seconds']:.1f} | {r['rows']:,} | {r['promoted']} "
              f"| {r['demoted']} | < {TARGET_SECONDS:.0f} s {verdict} |")
    print("\n| phase | run 1 (s) | run 2 (s) |")
    print("|---|---:|---:|")
    for _, name, label in PHASES:
        print(f"| {label} | {runs[0]['phases'][name]:.2f} | {runs[1]['phases'][name]:.2f} |")
    print(f"\nAudit rows written: run 1 {runs[0]['level_changes']}, run 2 {runs[1]['level_changes']}. "
          f"Validation trades over all pairs: {runs[0]['validation_trades']:,}; median validation profit factor "
          f"{np.median(pf):.2f} ({len(pf):,} pairs with a finite one). Peak RSS {peak_rss_mib():,.0f} MiB.")


if __name__ == "__main__":
    main()
