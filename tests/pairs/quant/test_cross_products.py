import numpy as np
import pytest

from pairs.quant.cross_products import bipartite_sides, cross_products
from pairs.quant.screening import split_pairs


@pytest.fixture
def series():
    rng = np.random.default_rng(7)
    return rng.normal(size=(300, 9)), rng.normal(size=(300, 9))


def _local(block):
    used, local = np.unique(block, return_inverse=True)
    return used, local.reshape(-1, 2)


def test_a_block_between_two_groups_has_those_groups_as_sides():
    for block in split_pairs(9, 6):
        used, local = _local(block)
        sides = bipartite_sides(local, len(used))
        within_one_group = len(used) * (len(used) - 1) == len(block)
        if within_one_group:
            assert sides is None
            continue
        assert sides is not None
        assert set(sides.first) | set(sides.second) == set(range(len(used)))
        assert not set(sides.first) & set(sides.second)
        for y, x in local:
            assert (y in sides.first) != (x in sides.first)


@pytest.mark.parametrize("pairs", [
    [[0, 1], [1, 2]],  # a path of three: 0 - 1 - 2 is bipartite ({0, 2}, {1}) ...
    [[0, 1], [1, 2], [2, 0]],  # ... a triangle is not
    [[0, 1], [2, 3], [0, 3], [2, 1], [1, 2]],
])
def test_sides_are_checked_against_every_pair(pairs):
    pairs = np.array(pairs)
    sides = bipartite_sides(pairs, int(pairs.max()) + 1)
    if sides is not None:
        first = set(sides.first.tolist())
        assert all((y in first) != (x in first) for y, x in pairs)
    else:
        # No split into two sides with every pair across them exists, or the anchor's partners don't give it.
        assert len(pairs) == 3


def test_no_pairs_or_one_symbol_has_no_sides():
    assert bipartite_sides(np.empty((0, 2), dtype=np.int64), 3) is None
    assert bipartite_sides(np.array([[0, 0]]), 1) is None


def test_cross_products_equal_the_full_product_where_pairs_across_the_sides_read(series):
    left, right = series
    full = left.T @ right
    block = next(b for b in split_pairs(9, 3) if len(np.unique(b)) * (len(np.unique(b)) - 1) != len(b))
    used, local = _local(block)
    sides = bipartite_sides(local, len(used))
    partial = cross_products(left[:, used], right[:, used], sides)
    sub = full[np.ix_(used, used)]
    for y, x in local:
        for a, b in ((y, y), (y, x), (x, y), (x, x)):
            assert partial[a, b] == pytest.approx(sub[a, b], rel=1e-13, abs=1e-12)
    # Nothing within one side is computed.
    assert not partial[np.ix_(sides.first, sides.first)][~np.eye(len(sides.first), dtype=bool)].any()


def test_a_product_of_a_matrix_with_itself_takes_its_second_block_from_the_first(series):
    left, _ = series
    block = next(b for b in split_pairs(9, 3) if len(np.unique(b)) * (len(np.unique(b)) - 1) != len(b))
    used, local = _local(block)
    sides = bipartite_sides(local, len(used))
    data = left[:, used]
    for first, second in ((data, data), (data[1:], data[1:]), (data[1:], data[:-1])):
        partial = cross_products(first, second, sides)
        full = first.T @ second
        for y, x in local:
            assert partial[y, x] == pytest.approx(full[y, x], rel=1e-13, abs=1e-12)
            assert partial[x, y] == pytest.approx(full[x, y], rel=1e-13, abs=1e-12)


def test_without_sides_the_product_is_the_full_one_bit_for_bit(series):
    left, right = series
    out = np.empty((9, 9))
    assert cross_products(left, right, None, out=out) is out
    np.testing.assert_array_equal(out, left.T @ right)
