"""How many BLAS threads a process's numerical work may use, and the context that holds it there (threadpoolctl).

numpy's OpenBLAS starts one thread per core in every process, and its threads spin while they wait for each other.
With several numerical processes on the machine (Celery's prefork children, a command beside a worker) they
outnumber the cores and the spinning threads steal each other's time: the screening ran 5.6x slower under load
with the default threads than with one (#18). So every process that does numerical work divides the cores it was
given among its processes: ``threads = cores // processes`` (at least 1), or ``STATARB_BLAS_THREADS`` when set.

A Celery worker declares its concurrency once (``process_configure``, from ``statarb_site.celery``), a command
that starts worker processes of its own declares them the same way; the numerical services wrap their hot loops in
``blas_thread_limit()``, which applies the process's share for the duration of the block and restores what was
there before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from threadpoolctl import threadpool_limits

# Processes sharing this process's cores (1 unless a worker or a process pool said otherwise).
_processes = 1


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def process_configure(*, processes: int) -> None:
    """Declare how many processes share this process's cores (a worker's concurrency, a pool's size)."""
    global _processes
    _processes = max(1, int(processes))


def blas_threads(*, pool: int = 1) -> int:
    """BLAS threads of this process: ``STATARB_BLAS_THREADS`` when set (> 0), else cores // processes, >= 1.

    ``pool``: processes this one is about to fork to share its work (each of them gets this share).
    """
    configured = int(getattr(settings, "STATARB_BLAS_THREADS", 0) or 0)
    if configured > 0:
        return configured
    return max(1, available_cores() // (_processes * max(1, pool)))


@contextmanager
def blas_thread_limit(threads: int | None = None) -> Iterator[int]:
    """Run the block with at most ``threads`` (default ``blas_threads()``) BLAS threads; yields the limit."""
    limit = threads if threads is not None else blas_threads()
    with threadpool_limits(limits=limit, user_api="blas"):
        yield limit
