"""The screening run: from stored candles to cointegration runs, pairs and their test history.

A run is three steps so that the middle one can fan out over Celery workers:
``screening_run_start`` fixes the universe and the window and records the run; ``screening_block`` screens one
block of pairs (any worker, reading the same window from the database); ``screening_run_finish`` merges the
blocks, controls the false discovery rate over the whole run, confirms candidates out of sample and writes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from core.threads import blas_thread_limit, blas_threads, screen_processes
from pairs.marketdata.grid import PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.models import CointegrationRun, Instrument, Level, Pair, PairTest, StrategyConfig
from pairs.quant.screening import (
    Confirmation,
    ScreenResult,
    degenerate_tests,
    merge_and_adjust,
    pair_tiles,
    passing_directions,
    screen,
    series_and_confirmations,
    split_pairs,
    tile_pairs,
)
from pairs.selectors import candle_bounds, price_window, universe_instruments

logger = logging.getLogger(__name__)

# The watch level new candidates start on; they climb only through grading.
ENTRY_LEVEL_NUMBER = 0
# Pairs per fanned-out block (STATARB_SCREEN_BLOCK_PAIRS overrides it for the task).
DEFAULT_BLOCK_PAIRS = 10_000


class ScreeningError(RuntimeError):
    pass


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _symbols_check(config: StrategyConfig, symbols: list[str], universe: list[Instrument]) -> None:
    """Every symbol asked for must be in the universe the run takes: one left out silently (a typo, a symbol excluded
    by hand) gave a run, stored and audited, over fewer symbols than asked, with nothing said."""
    missing = sorted(set(symbols) - {i.symbol for i in universe})
    if not missing:
        return
    known = set(Instrument.objects.filter(exchange=config.exchange, symbol__in=missing)
                .values_list("symbol", flat=True))
    parts = []
    if unknown := [s for s in missing if s not in known]:
        parts.append(f"no instrument of {config.exchange}: {', '.join(unknown)}")
    if outside := [s for s in missing if s in known]:
        parts.append(f"not in the run's universe (excluded by hand, not trading, quoted in another currency than "
                     f"{config.quote}, or 24h turnover below min_turnover_24h): {', '.join(outside)}")
    raise ScreeningError("symbol(s) asked for that the screening can't take: " + "; ".join(parts))


@dataclass(frozen=True)
class FormationWindow:
    """What a screening reads: the universe, the formation window and its bounds (nothing is written)."""

    instruments: list[Instrument]
    window: PriceWindow
    lookback: int
    newest: datetime
    formation_end: datetime


def formation_window(
    *, config: StrategyConfig, lookback_bars: int | None = None, end: datetime | None = None,
    symbols: list[str] | None = None, read_processes: int | None = None,
) -> FormationWindow:
    """The universe and the formation window a screening run at ``end`` takes.

    Forward in time (issue #17): the screening (formation) window is the ``lookback`` bars ending
    ``validation_bars`` bars before ``end`` (default: the newest stored bar), so that the validation bars after it
    exist when the pairs are graded (``pairs.services.evidence``); the universe is the one of the formation's last
    bar (point in time when ``end`` is given, ``pairs.selectors.universe_instruments``)."""
    lookback = lookback_bars or config.lookback_bars
    if lookback < 100:
        raise ScreeningError(f"lookback of {lookback} bars is too short for an Engle-Granger test (at least 100)")
    newest = end or candle_bounds(exchange=config.exchange, timeframe=config.timeframe)[1]
    if newest is None:
        raise ScreeningError(f"no {config.timeframe} candles of {config.exchange} are stored: import or fetch "
                             "candles first")
    formation_end = newest - timedelta(milliseconds=timeframe_ms(config.timeframe)) * config.validation_bars
    instruments = universe_instruments(config=config, at=None if end is None else formation_end)
    if symbols:
        instruments = [i for i in instruments if i.symbol in set(symbols)]
        _symbols_check(config, symbols, instruments)
    window = price_window(instruments=instruments, timeframe=config.timeframe, bars=lookback, end=formation_end,
                          min_history_bars=config.min_history_bars, processes=read_processes or screen_processes())
    if len(window.symbols) < 2:
        raise ScreeningError(
            f"only {len(window.symbols)} symbol(s) with {max(lookback, config.min_history_bars)} bars of "
            f"{config.timeframe} history up to {_iso(formation_end)} (the formation window ends validation_bars = "
            f"{config.validation_bars} bars before {_iso(newest)}) in the universe of {config.exchange} "
            f"({len(instruments)} instruments; import or fetch candles first, or lower min_history_bars or "
            "validation_bars in the strategy configuration)"
        )
    return FormationWindow(instruments=instruments, window=window, lookback=lookback, newest=newest,
                           formation_end=formation_end)


def screening_run_start(
    *, config: StrategyConfig, lookback_bars: int | None = None, end: datetime | None = None,
    symbols: list[str] | None = None, read_processes: int | None = None,
) -> tuple[CointegrationRun, PriceWindow]:
    """Choose the universe and the window (``formation_window``), and record a running CointegrationRun with what
    was chosen. ``read_processes``: forked processes sharing the window's read (default ``screen_processes()``)."""
    formation = formation_window(config=config, lookback_bars=lookback_bars, end=end, symbols=symbols,
                                 read_processes=read_processes)
    window, lookback, newest = formation.window, formation.lookback, formation.newest
    holdout = min(config.confirmation_bars, lookback // 4)
    run = CointegrationRun.objects.create(
        exchange=config.exchange,
        timeframe=config.timeframe,
        lookback_bars=lookback,
        window_start=window.bar_time(0),
        window_end=window.bar_time(-1),
        n_symbols=len(window.symbols),
        parameters={
            "instrument_ids": window.instrument_ids,
            "excluded": window.excluded,
            "max_pvalue": config.max_pvalue,
            "max_qvalue": config.max_qvalue,
            "confirmation_bars": holdout,
            "confirmation_max_pvalue": config.confirmation_max_pvalue,
            "min_half_life_bars": config.min_half_life_bars,
            "max_half_life_bars": config.max_half_life_bars,
            "min_history_bars": config.min_history_bars,
            "validation_bars": config.validation_bars,
            "validation_end": _iso(newest),
        },
    )
    return run, window


def run_window(run: CointegrationRun) -> PriceWindow:
    """The exact window a run screens, rebuilt from the database (what each fanned-out block reads)."""
    ids = run.parameters["instrument_ids"]
    instruments = list(Instrument.objects.filter(pk__in=ids))
    window = price_window(instruments=instruments, timeframe=run.timeframe, bars=run.lookback_bars,
                          end=run.window_end, min_history_bars=run.parameters.get("min_history_bars"))
    if window.instrument_ids != ids:
        raise ScreeningError(f"run {run.pk}: the window's symbols changed since the run started")
    return window


def _block_count(window: PriceWindow, block_pairs: int) -> int:
    n = len(window.symbols)
    return max(1, math.ceil(n * (n - 1) / block_pairs))


def screening_blocks(window: PriceWindow, *, block_pairs: int = DEFAULT_BLOCK_PAIRS) -> list[np.ndarray]:
    return split_pairs(len(window.symbols), _block_count(window, block_pairs))


def screening_tiles(window: PriceWindow, *, block_pairs: int = DEFAULT_BLOCK_PAIRS) -> list[list[int]]:
    """The blocks of ``screening_blocks`` as [groups, first group, second group] (``pair_tiles``): what a
    fanned-out block's message carries (``screening_tile_pairs`` rebuilds its pairs)."""
    groups, tiles = pair_tiles(len(window.symbols), _block_count(window, block_pairs))
    return [[groups, first, second] for first, second in tiles]


def screening_tile_pairs(window: PriceWindow, tile: list[int]) -> np.ndarray:
    """The pairs of one tile of ``screening_tiles``; ScreeningError when the tile doesn't fit the window."""
    try:
        return tile_pairs(len(window.symbols), *tile)
    except (TypeError, ValueError) as exc:
        raise ScreeningError(f"tile {tile!r} doesn't fit the window of {len(window.symbols)} symbols: {exc}") from None


def screening_block(window: PriceWindow, pairs: np.ndarray, *, processes: int = 1) -> ScreenResult:
    """Screen one block of pairs, with ``processes`` forked processes sharing it (each with its share of the BLAS
    threads, ``core.threads``)."""
    with blas_thread_limit(blas_threads(pool=processes)):
        return screen(np.log(window.closes), pairs, processes=processes)


@dataclass
class ScreeningOutcome:
    run: CointegrationRun
    window: PriceWindow
    result: ScreenResult
    passed: np.ndarray
    candidate: np.ndarray
    confirmation: dict[int, Confirmation]

    def as_json(self) -> dict:
        symbols = self.window.symbols
        r = self.result
        degenerate = degenerate_tests(r)
        tests = []
        for k in range(len(r)):
            check = self.confirmation.get(k)
            tests.append({
                "y": symbols[r.y_index[k]],
                "x": symbols[r.x_index[k]],
                "hedge_ratio": _finite_or_none(r.hedge_ratio[k]),
                "intercept": _finite_or_none(r.intercept[k]),
                "adf_stat": _finite_or_none(r.adf_stat[k]),  # none for a degenerate test (collinear, constant)
                "lag": int(r.lag[k]) if r.lag[k] >= 0 else None,
                "pvalue": _finite_or_none(r.pvalue[k]) if r.lag[k] >= 0 else None,
                # The p-value the selection reads (twice the lower of the pair's two, ``family_pvalues``) and its
                # q-value; none for the direction not preferred. "pvalue" is the direction's raw Engle-Granger p.
                # A degenerate test is left out of the family (its p of 0 is statsmodels' convention, not evidence).
                "family_pvalue": None if degenerate[k] else _finite_or_none(r.family_pvalue[k]),
                "qvalue": _finite_or_none(r.qvalue[k]),
                "preferred_direction": bool(r.preferred[k]),
                "half_life": _finite_or_none(r.half_life[k]),
                "hurst": _finite_or_none(r.hurst[k]),
                "mean_crossings": int(r.mean_crossings[k]) if r.mean_crossings[k] >= 0 else None,
                "spread_mean": _finite_or_none(r.spread_mean[k]),
                "spread_std": _finite_or_none(r.spread_std[k]),
                "zscore": _finite_or_none(r.zscore[k]),
                "return_correlation": _finite_or_none(r.return_correlation[k]),
                "passed": bool(self.passed[k]),
                "confirmed_out_of_sample": None if check is None else bool(check.confirmed),
                "johansen_passed": None if check is None else bool(check.johansen_passed),
                "candidate": bool(self.candidate[k]),
            })
        return {
            "run_id": self.run.pk,
            "exchange": self.run.exchange,
            "timeframe": self.run.timeframe,
            "window_start": _iso(self.run.window_start),
            "window_end": _iso(self.run.window_end),
            "n_symbols": self.run.n_symbols,
            "n_tests": len(r),
            "n_passed": int(self.passed.sum()),
            "n_candidates": int(self.candidate.sum()),
            "excluded_symbols": self.window.excluded,
            "parameters": {k: v for k, v in self.run.parameters.items() if k not in ("instrument_ids", "excluded")},
            "tests": tests,
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def screening_run_failed(run_id: int, exc: BaseException, *, only_running: bool = False) -> None:
    """Mark the run failed with the error (nothing else of it is written); with ``only_running``, only a run that
    is still running (a failure already recorded is kept)."""
    runs = CointegrationRun.objects.filter(pk=run_id)
    if only_running:
        runs = runs.filter(status=CointegrationRun.Status.RUNNING)
    runs.update(status=CointegrationRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                finished_at=timezone.now())


def screening_run_finish(
    *, run: CointegrationRun, window: PriceWindow, parts: list[ScreenResult], started: float | None = None,
    processes: int = 1,
) -> ScreeningOutcome:
    """Merge, adjust, confirm and write; the run is marked failed (and nothing else written) on any error.
    ``processes``: forked processes sharing the series statistics and confirmations (each with its share of the
    BLAS threads)."""
    try:
        with blas_thread_limit(blas_threads(pool=processes)):
            outcome = _finish(run=run, window=window, parts=parts, processes=processes)
    except Exception as exc:
        screening_run_failed(run.pk, exc)
        raise
    run.refresh_from_db()
    if started is not None:
        run.duration_seconds = time.monotonic() - started
        run.save(update_fields=["duration_seconds"])
    return outcome


def _finish(*, run: CointegrationRun, window: PriceWindow, parts: list[ScreenResult], processes: int = 1
            ) -> ScreeningOutcome:
    params = run.parameters
    result = merge_and_adjust(parts)
    # Only the preferred direction of each unordered pair can pass, on its family p-value (twice the lower of the
    # pair's two) and q-value (``pairs.quant.screening.merge_and_adjust``); ``pvalue`` stays the raw one.
    passed, half_life_ok = passing_directions(result, max_pvalue=params["max_pvalue"], max_qvalue=params["max_qvalue"],
                                              min_half_life=params["min_half_life_bars"],
                                              max_half_life=params["max_half_life_bars"])
    log_closes = np.log(window.closes)
    # Hurst and crossings of the passing directions, confirmation of those with a half-life in range: shared by the
    # screen's processes (#18: a fifth of a 100-symbol run in one process).
    confirmation = series_and_confirmations(result, log_closes, np.flatnonzero(passed),
                                            np.flatnonzero(passed & half_life_ok),
                                            holdout_bars=params["confirmation_bars"],
                                            max_pvalue=params["confirmation_max_pvalue"], processes=processes)
    candidate = np.zeros(len(result), dtype=bool)
    for k, check in confirmation.items():
        candidate[k] = check.confirmed
    _write(run=run, window=window, result=result, passed=passed, candidate=candidate, confirmation=confirmation)
    return ScreeningOutcome(run=run, window=window, result=result, passed=passed, candidate=candidate,
                            confirmation=confirmation)


@transaction.atomic
def _write(*, run, window, result, passed, candidate, confirmation) -> None:
    now = timezone.now()
    ids = np.asarray(window.instrument_ids)
    y_ids, x_ids = ids[result.y_index], ids[result.x_index]
    # Test of each (y, x) window column pair, -1 where none: an N x N table, not a dict of N^2 Python tuples (#18:
    # 0.5 s for 1,000 symbols).
    test_of = np.full((len(ids), len(ids)), -1, dtype=np.int64)
    test_of[result.y_index, result.x_index] = np.arange(len(result))
    column_of = {int(instrument_id): column for column, instrument_id in enumerate(ids.tolist())}
    existing = {
        (p.y_instrument_id, p.x_instrument_id): p
        for p in Pair.objects.select_for_update().filter(
            timeframe=run.timeframe, y_instrument_id__in=ids.tolist(), x_instrument_id__in=ids.tolist()
        )
    }
    entry_level = Level.objects.filter(number=ENTRY_LEVEL_NUMBER).first()
    new_pairs = []
    for k in np.flatnonzero(candidate):
        key = (int(y_ids[k]), int(x_ids[k]))
        if key not in existing:
            new_pairs.append(Pair(y_instrument_id=key[0], x_instrument_id=key[1], timeframe=run.timeframe,
                                  status=Pair.Status.ACTIVE, level=entry_level, level_changed_at=now,
                                  hedge_ratio=float(result.hedge_ratio[k])))
    if new_pairs:
        Pair.objects.bulk_create(new_pairs)
        existing.update({
            (p.y_instrument_id, p.x_instrument_id): p
            for p in Pair.objects.filter(timeframe=run.timeframe, y_instrument_id__in=ids.tolist(),
                                         x_instrument_id__in=ids.tolist())
        })
    tests, updated = [], []
    degenerate = degenerate_tests(result)
    # A failure counts towards dropping a pair once per window and settings: a run again on the same data with the
    # same settings (a second demo, a select_pairs by hand after beat's) tells nothing new and must not break a
    # pair by repetition.
    # (Both sides as stored: the parameters compared as the database gives them back.)
    stored = {pk: (end, parameters) for pk, end, parameters in CointegrationRun.objects.filter(
        pk__in={run.pk, *(p.last_run_id for p in existing.values() if p.last_run_id)}).values_list(
        "pk", "window_end", "parameters")}
    for key, pair in existing.items():
        k = int(test_of[column_of[key[0]], column_of[key[1]]])
        if k < 0:
            continue
        check = confirmation.get(k)
        _apply_latest_test(pair, result, k, run=run, now=now, passed=bool(passed[k]), check=check,
                           new_evidence=stored.get(pair.last_run_id) != stored[run.pk])
        updated.append(pair)
        if degenerate[k]:
            # A leg that froze (or became a copy of the other): a failure of the pair, with nothing to record as a
            # test (its statistics are undefined); the pair keeps its last real estimates.
            continue
        tests.append(PairTest(
            run=run, pair=pair, hedge_ratio=float(result.hedge_ratio[k]), intercept=float(result.intercept[k]),
            adf_stat=float(result.adf_stat[k]), adf_lag=int(result.lag[k]), pvalue=float(result.pvalue[k]),
            qvalue=_finite_or_none(result.qvalue[k]), half_life_bars=_finite_or_none(result.half_life[k]),
            hurst=_finite_or_none(result.hurst[k]), passed=bool(passed[k]),
            confirmed_out_of_sample=None if check is None else check.confirmed,
            johansen_passed=None if check is None else check.johansen_passed,
        ))
    _pairs_update(updated, _LATEST_TEST_FIELDS)
    PairTest.objects.bulk_create(tests, batch_size=1000)
    CointegrationRun.objects.filter(pk=run.pk).update(
        status=CointegrationRun.Status.SUCCEEDED, n_tests=len(result), n_passed=int(passed.sum()),
        n_candidates=int(candidate.sum()), finished_at=now,
    )


_LATEST_TEST_FIELDS = [
    "hedge_ratio", "intercept", "adf_stat", "adf_lag", "pvalue", "qvalue", "johansen_trace", "johansen_passed",
    "half_life_bars", "hurst", "mean_crossings", "spread_mean", "spread_std", "screening_zscore",
    "return_correlation",
    "last_run", "last_tested_at", "last_passed_at", "consecutive_failures", "updated_at",
]


def _pairs_update(pairs: list[Pair], field_names: list[str]) -> None:
    """``Pair.objects.bulk_update(pairs, field_names)`` as one prepared UPDATE per row (``executemany``): the ORM's
    CASE expressions for 20 fields cost more to compile than the database takes to run the rows (#18)."""
    if not pairs:
        return
    fields = [Pair._meta.get_field(name) for name in field_names]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(Pair._meta.db_table)} SET {assignments} WHERE {quote(Pair._meta.pk.column)} = %s"  # noqa: S608
    rows = [[field.get_db_prep_save(getattr(pair, field.attname), connection) for field in fields] + [pair.pk]
            for pair in pairs]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _apply_latest_test(pair: Pair, result: ScreenResult, k: int, *, run, now, passed: bool, check,
                       new_evidence: bool = True) -> None:
    # A degenerate test's undefined figures (NaN, -inf, lag -1) are never stored: the hedge ratio and intercept
    # keep their last estimate, the test's statistics read as none.
    if np.isfinite(result.hedge_ratio[k]) and np.isfinite(result.intercept[k]):
        pair.hedge_ratio = float(result.hedge_ratio[k])
        pair.intercept = float(result.intercept[k])
    defined = result.lag[k] >= 0
    pair.adf_stat = _finite_or_none(result.adf_stat[k]) if defined else None
    pair.adf_lag = int(result.lag[k]) if defined else None
    pair.pvalue = _finite_or_none(result.pvalue[k]) if defined else None
    pair.qvalue = _finite_or_none(result.qvalue[k])
    pair.half_life_bars = _finite_or_none(result.half_life[k])
    pair.hurst = _finite_or_none(result.hurst[k])
    pair.mean_crossings = int(result.mean_crossings[k]) if result.mean_crossings[k] >= 0 else None
    pair.spread_mean = _finite_or_none(result.spread_mean[k])
    pair.spread_std = _finite_or_none(result.spread_std[k])
    pair.screening_zscore = _finite_or_none(result.zscore[k])
    pair.return_correlation = _finite_or_none(result.return_correlation[k])
    if check is not None:
        pair.johansen_trace = check.johansen_trace
        pair.johansen_passed = check.johansen_passed
    pair.last_run = run
    pair.last_tested_at = now
    pair.updated_at = now
    if passed:
        pair.last_passed_at = now
        pair.consecutive_failures = 0
    elif new_evidence:
        pair.consecutive_failures += 1


def screening_run(
    *, config: StrategyConfig, lookback_bars: int | None = None, end: datetime | None = None,
    symbols: list[str] | None = None, progress=None,
) -> ScreeningOutcome:
    """A whole run in this process (the command, and the task on the embedded default)."""
    started = time.monotonic()
    run, window = screening_run_start(config=config, lookback_bars=lookback_bars, end=end, symbols=symbols)
    try:
        # One block in process: the Engle-Granger cross sums are computed once for the whole universe (any split
        # costs them again per block), and the batch bounds its own memory.
        blocks = screening_blocks(window, block_pairs=len(window.symbols) ** 2)
        total = sum(len(block) for block in blocks)
        parts = []
        for block in blocks:
            parts.append(screening_block(window, block, processes=screen_processes()))
            if progress is not None:
                progress(len(block), total)
    except Exception as exc:
        screening_run_failed(run.pk, exc)
        raise
    return screening_run_finish(run=run, window=window, parts=parts, started=started, processes=screen_processes())
