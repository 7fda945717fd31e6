"""BLAS thread limits: the share of the cores, the setting, the context and the Celery worker's hooks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from core import threads
from core.threads import available_cores, blas_thread_limit, blas_threads, process_configure


def blas_thread_counts() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture(autouse=True)
def one_process():
    yield
    process_configure(processes=1)


def test_numpy_has_a_blas_pool_to_limit():
    assert np.ones(3) @ np.ones(3) == 3.0  # numpy (and its BLAS) loaded
    assert blas_thread_counts()


def test_default_divides_the_cores_among_the_processes(settings):
    settings.STATARB_BLAS_THREADS = 0
    cores = available_cores()
    assert cores >= 1
    assert blas_threads() == cores
    process_configure(processes=2)
    assert blas_threads() == max(1, cores // 2)
    process_configure(processes=cores * 4)
    assert blas_threads() == 1
    process_configure(processes=0)  # nonsense counts as one process
    assert blas_threads() == cores


def test_setting_overrides_the_share(settings):
    settings.STATARB_BLAS_THREADS = 3
    process_configure(processes=8)
    assert blas_threads() == 3


def test_context_limits_blas_and_restores_it(settings):
    settings.STATARB_BLAS_THREADS = 1
    before = blas_thread_counts()
    with blas_thread_limit() as limit:
        assert limit == 1
        assert blas_thread_counts() == {1}
    assert blas_thread_counts() == before
    with blas_thread_limit(2) as limit:
        assert limit == 2 and blas_thread_counts() == {2}
    assert blas_thread_counts() == before


def test_worker_hooks_give_each_process_its_share(settings):
    from statarb_site import celery

    settings.STATARB_BLAS_THREADS = 0
    before = blas_thread_counts()
    try:
        celery.divide_blas_threads(sender="worker@host", instance=SimpleNamespace(concurrency=available_cores() * 2))
        assert threads._processes == available_cores() * 2
        assert blas_thread_counts() == {1}
        celery._process_blas_limit.restore_original_limits()
        assert blas_thread_counts() == before
        celery.limit_blas_threads_in_child()  # a prefork child applies the share it inherited
        assert blas_thread_counts() == {1}
    finally:
        celery._process_blas_limit.restore_original_limits()
    assert blas_thread_counts() == before


def test_screen_processes_default_to_the_share_of_the_cores(settings):
    settings.STATARB_SCREEN_PROCESSES = 0
    cores = available_cores()
    assert threads.screen_processes() == cores
    process_configure(processes=cores)  # a worker whose concurrency fills the cores screens in its own process
    assert threads.screen_processes() == 1
    settings.STATARB_SCREEN_PROCESSES = 3
    assert threads.screen_processes() == 3


def test_the_heap_is_tuned_once_for_numerical_temporaries(monkeypatch):
    monkeypatch.setattr(threads, "_heap_tuned", False)
    tuned = threads.numeric_heap_tune()  # glibc here; elsewhere it reports False and changes nothing
    assert threads._heap_tuned
    assert threads.numeric_heap_tune() is True
    with blas_thread_limit(1):
        assert np.ones(3) @ np.ones(3) == 3.0
    assert isinstance(tuned, bool)
