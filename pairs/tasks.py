"""Selection tasks: thin wrappers that call services."""

from __future__ import annotations

import time

import numpy as np
from celery import chord, group, shared_task
from django.conf import settings

from core.threads import available_cores
from exchanges.factory import market_data_exchange
from pairs.market import stored_clock_end
from pairs.models import CointegrationRun, StrategyConfig
from pairs.selectors import candle_fetch_instruments
from pairs.services.fanout import block_result_share, run_discard, run_token, shared_window, window_share
from pairs.services.fanout import block_results as stored_block_results
from pairs.services.market_data import candles_fetch, universe_refresh
from pairs.services.screening import (
    run_window,
    screening_block,
    screening_run,
    screening_run_failed,
    screening_run_finish,
    screening_run_start,
    screening_tile_pairs,
    screening_tiles,
)


# An upsert of closed bars: running it twice stores nothing twice, so a redelivery is harmless.
@shared_task(acks_late=True, soft_time_limit=50 * 60, time_limit=55 * 60)
def fetch_market_data() -> dict:
    """Refresh the universe from the exchange and fetch new closed candles for it."""
    config = StrategyConfig.current()
    client = market_data_exchange(config.exchange)
    sync = universe_refresh(exchange_client=client, exchange=config.exchange, quote=config.quote)
    results = candles_fetch(exchange_client=client, instruments=candle_fetch_instruments(config=config),
                            timeframe=config.timeframe, backfill_bars=config.backfill_bars)
    return {
        "instruments_created": len(sync.created),
        "instruments_delisted": len(sync.delisted),
        "symbols": len(results),
        "candles": sum(r.rows for r in results),
        "failed": {r.symbol: r.error for r in results if r.error},
    }


@shared_task(bind=True, soft_time_limit=30 * 60, time_limit=35 * 60)
def screen_pairs(self, lookback_bars: int | None = None) -> dict:
    """Screen the universe. With fan-out on (Redis in production), the pairs are cut into blocks screened by
    every worker of the selection queue and merged by a chord callback, which takes this task's place: whatever
    is chained after this task (``statarb_site.pipelines``) runs once the merge has written the run; otherwise the
    run stays in this task."""
    config = StrategyConfig.current()
    end = stored_clock_end(config.timeframe)
    if not settings.STATARB_SCREEN_FANOUT:
        outcome = screening_run(config=config, lookback_bars=lookback_bars, end=end)
        return {"run_id": outcome.run.pk, "n_tests": outcome.run.n_tests, "n_candidates": outcome.run.n_candidates}
    # The read before the blocks exist: every core of this machine is free for it (``read_processes``).
    run, window = screening_run_start(config=config, lookback_bars=lookback_bars, end=end,
                                      read_processes=available_cores())
    try:
        token = run_token()
        _window_cache.clear()
        _window_cache[run.pk] = window  # the run's window as its blocks would rebuild it (run_window checks the ids)
        window_share(run.pk, token, window)  # and for the other workers' processes, when Redis can keep it
        tiles = screening_tiles(window, block_pairs=settings.STATARB_SCREEN_BLOCK_PAIRS)
        run_chord = screening_chord(run, token, tiles)
    except Exception as exc:
        screening_run_failed(run.pk, exc)
        raise
    return self.replace(run_chord)


def screening_chord(run: CointegrationRun, token: str, tiles: list[list[int]]):
    """The run's blocks, one per tile (a message names its tile of symbol groups, not its thousands of pairs), and
    the merge after them; a block that fails marks the run failed (``screen_pairs_failed``)."""
    header = group(screen_pairs_block.s(run.pk, None, index, tile, token) for index, tile in enumerate(tiles))
    merge = screen_pairs_merge.s(run.pk, time.time(), token).on_error(screen_pairs_failed.s(run_id=run.pk))
    return chord(header, merge)


# The last run's window, per worker process: every block of a run reads the same candles, so a worker loads
# them once instead of once per block (from the dispatching task's copy in Redis when it is there).
_window_cache: dict[int, object] = {}


def _cached_run_window(run: CointegrationRun, token: str | None = None):
    if run.pk not in _window_cache:
        _window_cache.clear()
        shared = shared_window(run.pk, token, run.parameters["instrument_ids"], run.window_end)
        _window_cache[run.pk] = shared or run_window(run)
    return _window_cache[run.pk]


# Pure computation over data that doesn't change: safe to run again after a lost worker.
@shared_task(acks_late=True, soft_time_limit=20 * 60, time_limit=25 * 60)
def screen_pairs_block(run_id: int, pairs: list[list[int]] | None, index: int | None = None,
                       tile: list[int] | None = None, token: str | None = None) -> dict:
    """Screen the block given by its ``pairs`` or its ``tile`` (``screening_tiles``); returns its result, or with
    an ``index`` and the run's ``token`` a reference to it where Redis keeps it (``pairs.services.fanout``)."""
    run = CointegrationRun.objects.get(pk=run_id)
    window = _cached_run_window(run, token)
    block = screening_tile_pairs(window, tile) if tile is not None else np.asarray(pairs, dtype=np.int64)
    result = screening_block(window, block)
    return result.to_columns() if index is None else block_result_share(run_id, token, index, result)


@shared_task(soft_time_limit=20 * 60, time_limit=25 * 60)
def screen_pairs_merge(block_results: list[dict], run_id: int, started_at: float, token: str | None = None) -> dict:
    run = CointegrationRun.objects.get(pk=run_id)
    try:
        parts = stored_block_results(block_results)
        # The merge usually lands on a worker that screened blocks of this run: its window is loaded already.
        window = _cached_run_window(run, token)
    except Exception as exc:  # the run must not stay "running": what failed is in its error
        screening_run_failed(run_id, exc)
        raise
    # The last step of the run: this machine's cores are free for its confirmations.
    outcome = screening_run_finish(run=run, window=window, parts=parts, processes=available_cores())
    CointegrationRun.objects.filter(pk=run_id).update(duration_seconds=time.time() - started_at)
    run_discard(run_id, token, block_results)
    return {"run_id": run_id, "n_tests": outcome.run.n_tests, "n_candidates": outcome.run.n_candidates}


@shared_task
def screen_pairs_failed(request, exc, traceback, run_id: int) -> None:
    """The chord's error callback: a block (or the merge) failed, so the run will not be written; it is marked
    failed with the error, unless the merge marked it already."""
    screening_run_failed(run_id, exc, only_running=True)
