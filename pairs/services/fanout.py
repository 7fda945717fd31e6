"""What the tasks of a fanned-out screening share beside their messages: the run's price window and each block's
result, kept in the Redis of the result backend for an hour (#18).

Without it every worker process read the window from the database again for its first block (as long as the
dispatching task's own read: 1 to 2 s for 500 symbols on MariaDB, on a core that could screen), and the blocks'
results, about 1.5 MB of JSON each, went through the chord into one message of every result (45 MB for 500
symbols: a second of encoding and decoding between the last block and the merge). Here a block's result is stored
under a key and the chord carries the keys.

With another result backend (the embedded default's database) nothing is stored: the window is read from the
database (``run_window``) and the results travel in the messages, as before. A window or a result that has expired
or was evicted falls back the same way (a result can't: its block would have to run again, so the merge fails with
the key named).
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
from celery import current_app

from pairs.marketdata.grid import BarGrid, PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.quant.screening import ScreenResult

logger = logging.getLogger(__name__)

STORE_SECONDS = 3600
_PREFIX = "statarb:screening"


class FanoutStoreError(Exception):
    """A stored block result is missing (expired, evicted or deleted) when the merge reads it."""


def _client():
    """The result backend's Redis client, or None when the backend is not Redis."""
    from celery.backends.redis import RedisBackend

    backend = current_app.backend
    return backend.client if isinstance(backend, RedisBackend) else None


def _window_key(run_id: int) -> str:
    return f"{_PREFIX}:{run_id}:window"


def _block_key(run_id: int, index: int) -> str:
    return f"{_PREFIX}:{run_id}:block:{index}"


def window_share(run_id: int, window: PriceWindow) -> bool:
    """Store the run's window for the blocks' workers; False when there is no Redis to keep it."""
    client = _client()
    if client is None:
        return False
    closes = io.BytesIO()
    np.save(closes, np.ascontiguousarray(window.closes, dtype="<f8"), allow_pickle=False)
    meta = {"timeframe": window.timeframe, "first_s": int(window.bar_time(0).timestamp()) if window.bars else 0,
            "step_s": timeframe_ms(window.timeframe) // 1000, "bars": window.bars,
            "symbols": window.symbols, "instrument_ids": window.instrument_ids, "excluded": window.excluded,
            "filled_bars": window.filled_bars}
    with client.pipeline() as pipeline:
        pipeline.hset(_window_key(run_id), mapping={"meta": json.dumps(meta), "closes": closes.getvalue()})
        pipeline.expire(_window_key(run_id), STORE_SECONDS)
        pipeline.execute()
    return True


def shared_window(run_id: int, instrument_ids: list[int]) -> PriceWindow | None:
    """The window ``window_share`` stored for the run, when it is there and of these instruments; else None."""
    client = _client()
    if client is None:
        return None
    stored = client.hgetall(_window_key(run_id))
    if not stored:
        return None
    meta = json.loads(stored[b"meta"])
    if meta["instrument_ids"] != instrument_ids:
        logger.warning("screening run %s: the shared window's instruments differ from the run's; reading it again",
                       run_id)
        return None
    closes = np.load(io.BytesIO(stored[b"closes"]), allow_pickle=False)
    grid = BarGrid(first_s=meta["first_s"], step_s=meta["step_s"], bars=meta["bars"])
    return PriceWindow(timeframe=meta["timeframe"], times=grid, symbols=meta["symbols"],
                       instrument_ids=meta["instrument_ids"], closes=closes, excluded=meta["excluded"],
                       filled_bars=meta["filled_bars"])


def block_result_share(run_id: int, index: int, result: ScreenResult) -> dict:
    """What a block task returns: a reference to its stored result, or the result itself without Redis."""
    client = _client()
    columns = result.to_columns()
    if client is None:
        return columns
    key = _block_key(run_id, index)
    client.set(key, json.dumps(columns), ex=STORE_SECONDS)
    return {"stored": key}


def block_results(returned: list[dict]) -> list[ScreenResult]:
    """The blocks' results from what their tasks returned (``block_result_share``), in order."""
    stored = [item["stored"] for item in returned if "stored" in item]
    values = dict(zip(stored, _client().mget(stored), strict=True)) if stored else {}
    parts = []
    for item in returned:
        if "stored" not in item:
            parts.append(ScreenResult.from_columns(item))
            continue
        raw = values[item["stored"]]
        if raw is None:
            raise FanoutStoreError(f"the stored result {item['stored']} is gone (expired or evicted): run the "
                                   "screening again")
        parts.append(ScreenResult.from_columns(json.loads(raw)))
    return parts


def run_discard(run_id: int, returned: list[dict]) -> None:
    """Delete what the run stored (once merged)."""
    client = _client()
    if client is not None:
        client.delete(_window_key(run_id), *(item["stored"] for item in returned if "stored" in item))
