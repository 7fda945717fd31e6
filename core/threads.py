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


def screen_processes() -> int:
    """Forked processes an in-process screening shares its pairs among: ``STATARB_SCREEN_PROCESSES`` when set
    (> 0), else this process's share of the cores (cores // the processes declared sharing them), >= 1. Each of them
    then gets ``blas_threads(pool=...)``: one thread when the pool fills the cores, so no BLAS thread spins (#18)."""
    configured = int(getattr(settings, "STATARB_SCREEN_PROCESSES", 0) or 0)
    if configured > 0:
        return configured
    return max(1, available_cores() // _processes)


# glibc's malloc (M_* parameters of mallopt(3)): blocks from this size up get their own mmap, freed memory above
# this much at the heap's top goes back to the kernel, and each heap growth asks for this much more.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_HEAP_TUNING = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 128 << 20), (_M_TOP_PAD, 16 << 20))
_heap_tuned = False


def numeric_heap_tune() -> bool:
    """Keep the temporaries of batched numpy work on the heap (once per process; True when glibc took it).

    The batched screen allocates and frees arrays of 1 to 10 MB hundreds of times a second. By default glibc maps
    each one afresh (mmap) and returns it on free, so every new temporary page-faults its memory in again: a third
    of the Engle-Granger screen's time went to that (#18). With mmap reserved for blocks of 32 MB or more and up to
    128 MB of freed heap kept, the same pages are reused. A process keeps at most that much more memory."""
    global _heap_tuned
    if _heap_tuned:
        return True
    _heap_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in _HEAP_TUNING)


@contextmanager
def blas_thread_limit(threads: int | None = None) -> Iterator[int]:
    """Run the block with at most ``threads`` (default ``blas_threads()``) BLAS threads; yields the limit. The
    process's heap is tuned for numerical temporaries on first use (``numeric_heap_tune``)."""
    numeric_heap_tune()
    limit = threads if threads is not None else blas_threads()
    with threadpool_limits(limits=limit, user_api="blas"):
        yield limit
