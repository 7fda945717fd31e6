"""Forked ranges: every item once, in order, computed in other processes when asked."""

from __future__ import annotations

import itertools
import os

import pytest

from pairs.quant.forked import forked_map, item_ranges


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
