"""What the tasks of a fanned-out screening share beside their messages: the run's price window and each block's
result, kept in the Redis of the result backend until the merge deletes them (#18).

Without it every worker process read the window from the database again for its first block (as long as the
dispatching task's own read: 1 to 2 s for 500 symbols on MariaDB, on a core that could screen), and the blocks'
results, about 1.5 MB of JSON each, went through the chord into one message of every result (45 MB for 500
symbols: a second of encoding and decoding between the last block and the merge). Here a block's result is stored
under a key and the chord carries the keys.

Keys name the run and a token the dispatching task draws, so two deployments sharing a Redis (whose run ids may
coincide) never read each other's. What is left behind (a merge that never ran) expires with the backend's results
(``CELERY_RESULT_EXPIRES``).

With another result backend (the embedded default's database) nothing is stored: the window is read from the
database (``run_window``) and the results travel in the messages, as before. A window that can't be stored or is
gone falls back the same way; a result that is gone can't (its block would have to run again): the merge fails with
the key named.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import datetime

import numpy as np
from celery import current_app
from redis.exceptions import RedisError

from pairs.marketdata.grid import BarGrid, PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.quant.screening import ScreenResult

logger = logging.getLogger(__name__)

_PREFIX = "statarb:screening"
DEFAULT_STORE_SECONDS = 24 * 3600


class FanoutStoreError(Exception):
    """A stored block result is missing (expired, evicted or deleted) when the merge reads it."""


def _client():
    """The result backend's Redis client, or None when the backend is not Redis."""
    from celery.backends.redis import RedisBackend

    backend = current_app.backend
    return backend.client if isinstance(backend, RedisBackend) else None


def _store_seconds() -> int:
    """As long as the result backend keeps task results (a merge can't start later than its blocks' results)."""
    expires = current_app.backend.expires
    seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
    return int(seconds or DEFAULT_STORE_SECONDS)


def run_token() -> str:
    """The token a dispatching task draws for its run's keys."""
    return uuid.uuid4().hex[:16]


def _window_key(run_id: int, token: str) -> str:
    return f"{_PREFIX}:{run_id}:{token}:window"


def _block_key(run_id: int, token: str, index: int) -> str:
    return f"{_PREFIX}:{run_id}:{token}:block:{index}"


def window_share(run_id: int, token: str, window: PriceWindow) -> bool:
    """Store the run's window for the blocks' workers; False when there is no Redis to keep it or storing failed
    (the workers then read it from the database: it only saves them that read)."""
    client = _client()
    if client is None:
        return False
    closes = io.BytesIO()
    np.save(closes, np.ascontiguousarray(window.closes, dtype="<f8"), allow_pickle=False)
    meta = {"timeframe": window.timeframe, "first_s": int(window.bar_time(0).timestamp()) if window.bars else 0,
            "step_s": timeframe_ms(window.timeframe) // 1000, "bars": window.bars,
            "symbols": window.symbols, "instrument_ids": window.instrument_ids, "excluded": window.excluded,
            "filled_bars": window.filled_bars}
    key = _window_key(run_id, token)
    try:
        with client.pipeline() as pipeline:
            pipeline.hset(key, mapping={"meta": json.dumps(meta), "closes": closes.getvalue()})
            pipeline.expire(key, _store_seconds())
            pipeline.execute()
    except RedisError as exc:
        logger.warning("screening run %s: the window was not shared (%s); the workers read it themselves", run_id,
                       exc)
        return False
    return True


def shared_window(run_id: int, token: str | None, instrument_ids: list[int], end: datetime | None
                  ) -> PriceWindow | None:
    """The window ``window_share`` stored for the run, when it is there, of these instruments and ending at
    ``end``; else None (the caller reads it from the database)."""
    client = _client()
    if client is None or not token or end is None:
        return None
    try:
        stored = client.hgetall(_window_key(run_id, token))
    except RedisError as exc:
        logger.warning("screening run %s: the shared window can't be read (%s); reading it again", run_id, exc)
        return None
    if not stored:
        return None
    meta = json.loads(stored[b"meta"])
    if meta["instrument_ids"] != instrument_ids or meta["bars"] < 1 or \
            meta["first_s"] + meta["step_s"] * (meta["bars"] - 1) != int(end.timestamp()):
        logger.warning("screening run %s: the shared window is not the run's; reading it again", run_id)
        return None
    closes = np.load(io.BytesIO(stored[b"closes"]), allow_pickle=False)
    grid = BarGrid(first_s=meta["first_s"], step_s=meta["step_s"], bars=meta["bars"])
    return PriceWindow(timeframe=meta["timeframe"], times=grid, symbols=meta["symbols"],
                       instrument_ids=meta["instrument_ids"], closes=closes, excluded=meta["excluded"],
                       filled_bars=meta["filled_bars"])


def block_result_share(run_id: int, token: str | None, index: int, result: ScreenResult) -> dict:
    """What a block task returns: a reference to its stored result, or the result itself without Redis (or
    without a token: a message from before tokens)."""
    client = _client()
    columns = result.to_columns()
    if client is None or not token:
        return columns
    key = _block_key(run_id, token, index)
    client.set(key, json.dumps(columns), ex=_store_seconds())
    return {"stored": key}


def block_results(returned: list[dict]) -> list[ScreenResult]:
    """The blocks' results from what their tasks returned (``block_result_share``), in order. FanoutStoreError
    when a stored one is gone or can't be read."""
    stored = [item["stored"] for item in returned if "stored" in item]
    values = {}
    if stored:
        client = _client()
        if client is None:
            raise FanoutStoreError(f"{len(stored)} block results are stored in Redis, and this worker's result "
                                   "backend is not Redis: configure the same CELERY_RESULT_BACKEND on every worker")
        try:
            values = dict(zip(stored, client.mget(stored), strict=True))
        except RedisError as exc:
            raise FanoutStoreError(f"the stored block results can't be read: {exc}") from exc
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


def run_discard(run_id: int, token: str | None, returned: list[dict]) -> None:
    """Delete what the run stored (once merged; what a failure leaves expires)."""
    client = _client()
    if client is None:
        return
    keys = [item["stored"] for item in returned if "stored" in item]
    if token:
        keys.append(_window_key(run_id, token))
    if keys:
        try:
            client.delete(*keys)
        except RedisError as exc:
            logger.warning("screening run %s: its stored window and results were not deleted (%s); they expire",
                           run_id, exc)
