"""What a fanned-out screening keeps beside its messages (``pairs.services.fanout``), on a real Redis (the
dedicated db of ``cluster_services``) and without one (the embedded default's result backend)."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from pairs.marketdata.grid import BarGrid, PriceWindow
from pairs.quant.screening import screen
from pairs.services import fanout

RUN_ID = 987_654
TOKEN = "0123456789abcdef"


@pytest.fixture
def store(cluster_services, monkeypatch):
    """The module's Redis client pointed at the dedicated test Redis db, emptied before and after."""
    client = redis.Redis.from_url(cluster_services[1])
    keys = client.keys(f"statarb:screening:{RUN_ID}:*")
    if keys:
        client.delete(*keys)
    monkeypatch.setattr(fanout, "_client", lambda: client)
    yield client
    keys = client.keys(f"statarb:screening:{RUN_ID}:*")
    if keys:
        client.delete(*keys)


def _window() -> PriceWindow:
    rng = np.random.default_rng(3)
    closes = np.exp(np.cumsum(rng.normal(scale=0.01, size=(300, 4)), axis=0))
    closes[5, 1] = np.nextafter(closes[5, 1], 2.0)  # the last bit survives
    return PriceWindow(timeframe="1h", times=BarGrid(first_s=1_600_000_000 - 1_600_000_000 % 3600, step_s=3600,
                                                         bars=300),
                       symbols=["AUSDT", "BUSDT", "CUSDT", "DUSDT"], instrument_ids=[11, 12, 13, 14], closes=closes,
                       excluded={"EUSDT": "gap of 30 bars"}, filled_bars={"BUSDT": 2})


def test_the_window_comes_back_exact_for_the_same_instruments_only(store):
    window = _window()
    assert fanout.window_share(RUN_ID, TOKEN, window)
    assert store.ttl(f"statarb:screening:{RUN_ID}:{TOKEN}:window") > 3000
    end = window.bar_time(-1)

    back = fanout.shared_window(RUN_ID, TOKEN, [11, 12, 13, 14], end)
    np.testing.assert_array_equal(back.closes, window.closes)
    assert (back.symbols, back.instrument_ids, back.excluded, back.filled_bars, back.timeframe) == (
        window.symbols, window.instrument_ids, window.excluded, window.filled_bars, window.timeframe)
    assert [back.bar_time(k) for k in (0, 1, -1)] == [window.bar_time(k) for k in (0, 1, -1)]
    # Another universe, another end, another run or another token (a run of another deployment on the same
    # Redis, with the same id): not this window, so it is read again.
    assert fanout.shared_window(RUN_ID, TOKEN, [11, 12, 13], end) is None
    assert fanout.shared_window(RUN_ID, TOKEN, [11, 12, 13, 14], window.bar_time(-2)) is None
    assert fanout.shared_window(RUN_ID + 1, TOKEN, [11, 12, 13, 14], end) is None
    assert fanout.shared_window(RUN_ID, "fedcba9876543210", [11, 12, 13, 14], end) is None
    assert fanout.shared_window(RUN_ID, None, [11, 12, 13, 14], end) is None


def test_block_results_travel_by_reference_and_are_deleted_with_the_run(store):
    window = _window()
    fanout.window_share(RUN_ID, TOKEN, window)
    log_closes = np.log(window.closes)
    results = [screen(log_closes, np.array([[0, 1], [1, 0]])), screen(log_closes, np.array([[2, 3]]))]
    returned = [fanout.block_result_share(RUN_ID, TOKEN, index, result) for index, result in enumerate(results)]
    assert returned == [{"stored": f"statarb:screening:{RUN_ID}:{TOKEN}:block:0"},
                        {"stored": f"statarb:screening:{RUN_ID}:{TOKEN}:block:1"}]

    parts = fanout.block_results(returned)
    for part, result in zip(parts, results, strict=True):
        np.testing.assert_array_equal(part.pvalue, result.pvalue)
        np.testing.assert_array_equal(part.y_index, result.y_index)
        np.testing.assert_array_equal(part.hedge_ratio, result.hedge_ratio)

    fanout.run_discard(RUN_ID, TOKEN, returned)
    assert not store.keys(f"statarb:screening:{RUN_ID}:*")
    # A result that is gone can't be made up: the merge fails and names it.
    with pytest.raises(fanout.FanoutStoreError, match=f"statarb:screening:{RUN_ID}:{TOKEN}:block:0 is gone"):
        fanout.block_results(returned)


def test_a_merge_without_redis_fails_on_stored_results_with_a_clear_error(store, monkeypatch):
    result = screen(np.log(_window().closes), np.array([[0, 1]]))
    returned = [fanout.block_result_share(RUN_ID, TOKEN, 0, result)]
    monkeypatch.setattr(fanout, "_client", lambda: None)
    with pytest.raises(fanout.FanoutStoreError, match="result backend is not Redis"):
        fanout.block_results(returned)


def test_a_window_redis_refuses_is_not_shared_and_nothing_fails(cluster_services, monkeypatch):
    """Redis out of memory (or gone) when the window is stored: the workers read it themselves."""
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    monkeypatch.setattr(fanout, "_client", lambda: unreachable)
    assert not fanout.window_share(RUN_ID, TOKEN, _window())
    assert fanout.shared_window(RUN_ID, TOKEN, [11, 12, 13, 14], _window().bar_time(-1)) is None
    fanout.run_discard(RUN_ID, TOKEN, [])  # logged, not raised


def test_a_results_list_may_mix_references_and_inline_columns(store):
    log_closes = np.log(_window().closes)
    result = screen(log_closes, np.array([[0, 2]]))
    returned = [fanout.block_result_share(RUN_ID, TOKEN, 0, result), result.to_columns()]
    first, second = fanout.block_results(returned)
    np.testing.assert_array_equal(first.adf_stat, second.adf_stat)


def test_without_redis_nothing_is_stored_and_results_travel_inline(monkeypatch):
    monkeypatch.setattr(fanout, "_client", lambda: None)
    window = _window()
    assert not fanout.window_share(RUN_ID, TOKEN, window)
    assert fanout.shared_window(RUN_ID, TOKEN, window.instrument_ids, window.bar_time(-1)) is None
    result = screen(np.log(window.closes), np.array([[0, 1]]))
    returned = fanout.block_result_share(RUN_ID, TOKEN, 0, result)
    assert "stored" not in returned
    np.testing.assert_array_equal(fanout.block_results([returned])[0].pvalue, result.pvalue)
    fanout.run_discard(RUN_ID, TOKEN, [returned])  # nothing to delete, no error


@pytest.mark.django_db
def test_the_client_is_the_result_backends_redis_or_none(settings):
    from celery import current_app

    client = fanout._client()
    if current_app.conf.result_backend.startswith(("redis://", "rediss://")):
        assert isinstance(client, redis.Redis)
    else:
        assert client is None
