"""Split a batched computation over forked child processes that inherit its inputs (no copies, no pickling).

The screen's per-symbol cross sums are computed once; the pair blocks that read them are then independent, so
processes forked after the sums exist can take a range of pairs each, reading the parent's arrays through
copy-on-write memory, and send back only their results. Each pair's arithmetic is the same whichever process
computes it, so the results are bit-identical to a single process's. Where ``fork`` is not available (not on
Linux) or one process is asked for, the ranges run in this process.

The children are bare ``os.fork`` children, not a ``multiprocessing`` pool: a pool's children run every hook
registered with ``multiprocessing.util.register_after_fork`` and kombu and Celery register hooks there that close
or reopen the broker and result connections the child inherited. In a Celery worker or any process that has
talked to Redis, those hooks read from sockets the parent is still using, and a child could wait for ever on an
answer its parent had already taken. A bare child runs only ``task`` and leaves with ``os._exit``, so it touches
no inherited connection, runs no atexit handler and flushes no inherited buffer.
"""

from __future__ import annotations

import itertools
import os
import pickle
import traceback
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


class ForkedTaskError(RuntimeError):
    """A range failed in its child process; the message carries the child's traceback."""


def item_ranges(n_items: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering 0..n_items as evenly as possible (one empty range for 0)."""
    parts = max(1, min(parts, n_items))
    edges = [n_items * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(edges))


def forked_map(task: Callable[[int, int], Result], n_items: int, *, processes: int) -> list[Result]:
    """``[task(start, stop) for each range]`` over ``processes`` ranges of ``0..n_items``, in forked processes when
    more than one is asked for; results in range order. A child's exception is raised here as ForkedTaskError."""
    ranges = item_ranges(n_items, processes)
    if len(ranges) == 1 or not hasattr(os, "fork"):
        return [task(start, stop) for start, stop in ranges]
    children = [_start_child(task, start, stop) for start, stop in ranges]
    outcomes = [_collect(pid, read_end) for pid, read_end in children]  # every child reaped before any raise
    for ok, value in outcomes:
        if not ok:
            raise ForkedTaskError(value)
    return [value for _, value in outcomes]


def _start_child(task: Callable[[int, int], object], start: int, stop: int) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, leave without running anything inherited
        os.close(read_end)
        status = 1
        try:
            try:
                payload = pickle.dumps((True, task(start, stop)), protocol=pickle.HIGHEST_PROTOCOL)
                status = 0
            except BaseException:  # noqa: BLE001 - every failure goes back to the parent, which raises it
                payload = pickle.dumps((False, f"range {start}..{stop}:\n{traceback.format_exc()}"))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _collect(pid: int, read_end: int) -> tuple[bool, object]:
    """Read one child's whole answer (it may exceed the pipe's buffer, so read before waiting) and reap it."""
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not payload:
        return False, f"child {pid} ended without an answer (wait status {status})"
    return pickle.loads(payload)  # noqa: S301 - written by our own forked child a moment ago
