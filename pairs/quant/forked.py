"""Split a batched computation over forked worker processes that inherit its inputs (no copies, no pickling).

The screen's per-symbol cross sums are computed once; the pair blocks that read them are then independent, so a
pool of processes forked after the sums exist can take a range of pairs each, reading the parent's arrays through
copy-on-write memory, and send back only their results. Each pair's arithmetic is the same whichever process
computes it, so the results are bit-identical to a single process's. Where ``fork`` is not available (not on
Linux) or one process is asked for, the ranges run in this process.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")

# The task of the pool being forked: set before the fork, so every child inherits it; only (start, stop) is sent.
_task: Callable[[int, int], object] | None = None


def _run(bounds: tuple[int, int]) -> object:
    assert _task is not None
    return _task(*bounds)


def item_ranges(n_items: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering 0..n_items as evenly as possible (one empty range for 0)."""
    parts = max(1, min(parts, n_items))
    edges = [n_items * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(edges))


def forked_map(task: Callable[[int, int], Result], n_items: int, *, processes: int) -> list[Result]:
    """``[task(start, stop) for each range]`` over ``processes`` ranges of ``0..n_items``, in forked processes when
    more than one is asked for; results in range order."""
    global _task
    ranges = item_ranges(n_items, processes)
    if len(ranges) == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [task(start, stop) for start, stop in ranges]
    _task = task
    try:
        with multiprocessing.get_context("fork").Pool(len(ranges)) as pool:
            return pool.map(_run, ranges, chunksize=1)
    finally:
        _task = None
