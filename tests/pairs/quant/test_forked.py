"""Forked ranges: every item once, in order, computed in other processes when asked."""

from __future__ import annotations

import itertools
import multiprocessing.util
import os

import pytest

from pairs.quant.forked import ForkedTaskError, forked_map, item_ranges


@pytest.mark.parametrize(("n_items", "parts"), [(0, 3), (1, 4), (10, 3), (9900, 2), (7, 7), (5, 1)])
def test_ranges_cover_every_item_once_in_order(n_items, parts):
    ranges = item_ranges(n_items, parts)
    assert len(ranges) == max(1, min(parts, n_items))
    assert ranges[0][0] == 0 and ranges[-1][1] == n_items
    assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(ranges))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_forked_map_runs_the_ranges_in_child_processes_and_keeps_their_order():
    data = list(range(100))  # inherited by the children, not sent

    def task(start, stop):
        return os.getpid(), sum(data[start:stop]), (start, stop)

    results = forked_map(task, len(data), processes=3)
    assert [r[2] for r in results] == item_ranges(100, 3)
    assert sum(r[1] for r in results) == sum(data)
    assert os.getpid() not in {r[0] for r in results}
    single = forked_map(task, len(data), processes=1)
    assert single == [(os.getpid(), sum(data), (0, 100))]


def test_a_large_answer_comes_back_whole():
    def task(start, stop):
        return bytes(range(256)) * 4096 * (stop - start)  # 1 MiB a child, far beyond a pipe's buffer

    results = forked_map(task, 2, processes=2)
    assert [len(r) for r in results] == [1 << 20, 1 << 20]


def test_a_failing_range_raises_here_with_the_childs_traceback():
    def task(start, stop):
        if start:
            raise ValueError("no closes for the second block")
        return start

    with pytest.raises(ForkedTaskError, match="no closes for the second block") as raised:
        forked_map(task, 4, processes=2)
    assert "range 2..4" in str(raised.value)


class _Connection:
    """Stands for a broker connection that kombu registers for clean-up after a multiprocessing fork."""

    closed_in: list[int] = []

    def close_after_fork(self):
        _Connection.closed_in.append(os.getpid())


def test_children_run_no_multiprocessing_after_fork_hooks():
    # kombu and Celery register hooks that touch inherited Redis sockets; a child that ran them could wait for
    # ever on an answer its parent reads. The children must run the task and nothing else.
    connection = _Connection()
    multiprocessing.util.register_after_fork(connection, _Connection.close_after_fork)

    def task(start, stop):
        return os.getpid(), list(_Connection.closed_in)  # the hooks, had they run, ran before the task

    answers = forked_map(task, 2, processes=2)
    assert len({pid for pid, _ in answers}) == 2 and os.getpid() not in {pid for pid, _ in answers}
    assert [closed for _, closed in answers] == [[], []]
