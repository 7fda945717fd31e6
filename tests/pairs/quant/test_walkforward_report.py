"""Walk-forward statistics: the JSON shape, the statistics by hand, the nested selection and the PBO."""

import itertools
import math

import numpy as np
import pytest

from pairs.quant.evaluation import bootstrap_profit_factor_ci, deflated_sharpe_ratio, probabilistic_sharpe_ratio
from pairs.quant.performance import sharpe_ratio
from pairs.quant.walkforward import MS_PER_DAY, Period, PeriodTrades, level_numbers, periods, run_walkforward
from pairs.quant.walkforward_report import (
    MIN_DEFLATED_SHARPE_DAYS,
    daily_returns,
    nested_choices,
    report,
    statistics,
)
from tests.pairs.quant.walkforward_data import HOUR_MS, LADDER, PARAMS, START_MS, market

STATS_KEYS = {"trades", "win_rate", "profit_factor", "profit_factor_ci", "sharpe", "deflated_sharpe"}
WEEK = 168


def _fake(period: Period, returns, exit_days, levels=(1,)) -> PeriodTrades:
    n = len(returns)
    ints = np.zeros(n, dtype=np.int64)
    return PeriodTrades(period=period, universe=np.arange(2), y=np.array([1]), x=np.array([0]),
                        level=np.array(levels), pair=ints, ret=np.asarray(returns, dtype=float),
                        exit_ms=START_MS + np.asarray(exit_days, dtype=np.int64) * MS_PER_DAY + HOUR_MS,
                        entry_bar=ints, exit_bar=ints, side=ints, hedge_ratio=np.zeros(n))


def _times(n_days: int) -> np.ndarray:
    return START_MS + HOUR_MS * np.arange(24 * n_days, dtype=np.int64)


def test_daily_returns_sum_the_trades_closed_each_day():
    exits = START_MS + np.array([HOUR_MS, 2 * HOUR_MS, MS_PER_DAY, 3 * MS_PER_DAY - 1])  # a close at 24:00 is day 0
    daily = daily_returns(np.array([0.01, 0.02, -0.01, 0.5]), exits, START_MS, START_MS + 3 * MS_PER_DAY)
    np.testing.assert_allclose(daily, [0.02, 0.0, 0.5])


def test_statistics_by_hand():
    returns = np.array([0.02, -0.01, 0.03, 0.01])
    # 30 days with a closed trade, the fewest the deflated Sharpe ratio is given on (two zero days among them).
    daily = np.concatenate((np.tile([0.02, -0.01, 0.04, 0.01, -0.02, 0.03], 5), [0.0, 0.0]))
    assert np.count_nonzero(daily) == MIN_DEFLATED_SHARPE_DAYS
    stats = statistics(returns, daily)
    assert set(stats) == STATS_KEYS
    assert stats["trades"] == 4 and stats["win_rate"] == 0.75
    assert stats["profit_factor"] == pytest.approx(6.0)
    low, high = bootstrap_profit_factor_ci(returns)
    assert stats["profit_factor_ci"] == [low, None if math.isinf(high) else high]
    assert stats["sharpe"] == pytest.approx(sharpe_ratio(daily, 365))
    # One configuration: the DSR is the PSR against a zero Sharpe ratio.
    centred = daily - daily.mean()
    m2 = np.mean(centred**2)
    psr = probabilistic_sharpe_ratio(daily.mean() / daily.std(ddof=1), 0.0, 32, np.mean(centred**3) / m2**1.5,
                                     np.mean(centred**4) / m2**2)
    assert stats["deflated_sharpe"] == pytest.approx(psr)
    # Over a grid the trials deflate it.
    trials = [0.1, 0.5, -0.2, 0.3]
    assert statistics(returns, daily, trials)["deflated_sharpe"] == pytest.approx(
        deflated_sharpe_ratio(daily, trial_sharpes=trials))


def test_no_deflated_sharpe_from_a_few_trades_among_days_without_one():
    """Two winning trades in 47 days printed a deflated Sharpe ratio of 0.996 (the 500-bar window's level 1 on
    the reported part, docs/RESEARCH.md): "99.6 % that the true Sharpe ratio is positive" from two trades. With a
    few non-zero days among zeros the PSR's normal approximation fails: without an edge it passed 0.95 on about a
    quarter of such samples."""
    daily = np.zeros(47)
    daily[[3, 30]] = [0.012, 0.008]
    stats = statistics(np.array([0.012, 0.008]), daily)
    assert stats["deflated_sharpe"] is None
    assert stats["sharpe"] == pytest.approx(sharpe_ratio(daily, 365))  # the description stays
    assert statistics(np.array([0.012, 0.008]), daily, [0.1, -0.2, 0.3])["deflated_sharpe"] is None
    # No edge at all (zero-mean trades on k of 47 days): below 30 days no probability is printed, from 30 on it
    # is, and then it is not far from what it claims.
    rng = np.random.default_rng(5)
    for k, defined in ((2, False), (9, False), (29, False), (30, True), (47, True)):
        values = []
        for _ in range(400):
            sample = np.zeros(47)
            sample[rng.choice(47, size=k, replace=False)] = rng.standard_t(4, size=k) * 0.01
            values.append(statistics(np.zeros(0), sample)["deflated_sharpe"])  # the daily series decides
        assert all((v is not None) == defined for v in values), k
        if defined:
            assert np.mean(np.array(values) > 0.95) < 0.11, k


def test_unbounded_and_undefined_values_are_null():
    stats = statistics(np.array([0.01, 0.02]), np.array([0.01, 0.02, 0.0]))
    assert stats["profit_factor"] is None and stats["trades"] == 2  # no losses: unbounded
    empty = statistics(np.zeros(0), np.zeros(7))
    assert empty == {"trades": 0, "win_rate": None, "profit_factor": None, "profit_factor_ci": [None, None],
                     "sharpe": None, "deflated_sharpe": None}


def test_json_shape_of_a_single_point_run():
    m = market(PARAMS.history_bars() + 2 * WEEK)
    schedule = periods(m, start_bar=PARAMS.history_bars(), end_bar=len(m.times_ms), every_bars=WEEK, params=PARAMS)
    results = run_walkforward(m, schedule, [PARAMS], LADDER)
    data = report(results, level_numbers(LADDER), m.times_ms, m.bar_ms)
    assert set(data) == {"periods", "overall"}
    assert set(data["overall"]) == {"pool", "levels"}
    assert len(data["periods"]) == 2
    for row in data["periods"]:
        assert set(row) == {"formation_start", "trade_start", "trade_end", "pool", "levels"}
        assert set(row["levels"]) == {"1"}
        for stats in (row["pool"], row["levels"]["1"]):
            assert set(stats) == STATS_KEYS
    first = data["periods"][0]
    assert first["trade_start"] == "2021-03-04T12:00:00Z" and first["trade_end"] == "2021-03-11T12:00:00Z"
    assert first["formation_start"] == "2021-01-01T00:00:00Z"
    pool_trades = sum(len(r.ret) for r in results[0])
    assert data["overall"]["pool"]["trades"] == pool_trades
    assert data["overall"]["levels"]["1"]["trades"] == sum(int((r.trade_level() == 1).sum()) for r in results[0])


def test_nested_selection_uses_earlier_periods_only():
    periods_ = [Period(0, 10, 20 + 24 * k, 44 + 24 * k) for k in range(4)]
    # Point 0 wins in period 0 only, point 1 in periods 1-3: the choice follows the totals BEFORE each period
    # (after period 1: 0.4 against 0.3; after period 2: 0.3 against 0.7).
    point0 = [_fake(p, [r], [k]) for k, (p, r) in enumerate(zip(periods_, [0.5, -0.1, -0.1, -0.1], strict=True))]
    point1 = [_fake(p, [r], [k]) for k, (p, r) in enumerate(zip(periods_, [-0.1, 0.4, 0.4, 0.4], strict=True))]
    assert nested_choices([point0, point1], [1], "levels") == [0, 0, 0, 1, 1]  # then 0.2 against 1.1
    # Level-0 trades are in the pool but not in the levels book.
    pool_only = [_fake(p, [0.9], [k], levels=(0,)) for k, p in enumerate(periods_)]
    assert nested_choices([point0, pool_only], [1], "levels") == [0, 0, 0, 0, 0]
    assert nested_choices([point0, pool_only], [1], "pool") == [0, 1, 1, 1, 1]

    data = report([point0, point1], [1], _times(5), HOUR_MS, points=[{"entry_z": 2.0}, {"entry_z": 2.5}])
    overall = data["overall"]
    assert overall["nested"]["choices"] == [0, 0, 0, 1]
    assert overall["nested"]["next_choice"] == 1
    # Nested trades: 0.5, -0.1, -0.1 (periods 0-2 by point 0), 0.4 (period 3 by point 1).
    assert overall["pool"]["trades"] == 4 and overall["pool"]["win_rate"] == 0.5
    assert overall["pool"]["profit_factor"] == pytest.approx(0.9 / 0.2)
    assert 0.0 <= overall["pbo"] <= 1.0
    assert [p["parameters"] for p in overall["nested"]["points"]] == [{"entry_z": 2.0}, {"entry_z": 2.5}]


def test_grid_run_reports_pbo_and_the_nested_result():
    m = market(PARAMS.history_bars() + 4 * WEEK)
    schedule = periods(m, start_bar=PARAMS.history_bars(), end_bar=len(m.times_ms), every_bars=WEEK, params=PARAMS)
    points = [PARAMS, PARAMS.with_values({"entry_z": 3.9, "stop_z": 5.0}), PARAMS.with_values({"exit_z": 1.0})]
    results = run_walkforward(m, schedule, points, LADDER)
    data = report(results, level_numbers(LADDER), m.times_ms, m.bar_ms, points=[{}, {"entry_z": 3.9}, {"exit_z": 1.0}])
    overall = data["overall"]
    assert set(overall) == {"pool", "levels", "pbo", "nested"}
    assert isinstance(overall["pbo"], float) and 0 <= overall["pbo"] <= 1
    assert overall["nested"]["pbo_detail"]["n_splits"] == 16  # 28 days
    choices = overall["nested"]["choices"]
    assert choices[0] == 0 and len(choices) == 4
    expected = sum(len(results[c][k].ret) for k, c in enumerate(choices))
    assert overall["pool"]["trades"] == expected
    assert not math.isnan(overall["pool"]["sharpe"])


def _random_grid(n_points: int, n_days: int, seed: int = 7) -> list[list[PeriodTrades]]:
    """``n_points`` points of 3 periods, one trade a day each with random returns."""
    rng = np.random.default_rng(seed)
    spans = list(itertools.pairwise(int(b) for b in np.linspace(0, n_days, 4)))
    return [[_fake(Period(0, 0, 24 * a, 24 * b), rng.normal(0.0, 0.01, b - a), np.arange(a, b)) for a, b in spans]
            for _ in range(n_points)]


def test_identical_points_are_one_trial_in_the_deflated_sharpe_and_the_pbo():
    """A grid value that changes nothing (max_pvalue 0.01 and 0.05 when the q-value binds) gives points with the
    same trades: they must not count twice in the deflated Sharpe ratio nor sit as twins in the PBO's ranks."""
    distinct = _random_grid(5, 40)
    # Points 5..9 repeat points 0..4, 10 and 11 point 0 again (uneven copies move the PBO's ranks too).
    twins = [*distinct, *distinct, distinct[0], distinct[0]]
    times = _times(40)
    alone = report(distinct, [1], times, HOUR_MS, select_on="pool")["overall"]
    doubled = report(twins, [1], times, HOUR_MS, select_on="pool")["overall"]

    assert doubled["pool"]["deflated_sharpe"] == pytest.approx(alone["pool"]["deflated_sharpe"])
    mirrors = alone["nested"]["points"] * 2 + alone["nested"]["points"][:1] * 2
    for mine, theirs in zip(doubled["nested"]["points"], mirrors, strict=True):
        assert mine["pool"]["deflated_sharpe"] == pytest.approx(theirs["pool"]["deflated_sharpe"])
    assert doubled["pbo"] == alone["pbo"]
    assert doubled["nested"]["distinct_points"] == 5 and alone["nested"]["distinct_points"] == 5
    assert [p["same_as"] for p in doubled["nested"]["points"]] == [None] * 5 + [0, 1, 2, 3, 4, 0, 0]
    assert doubled["nested"]["pbo_detail"]["points"] == 5
    # The same returns with different exit times or levels are different points.
    moved = [[_fake(r.period, r.ret, (r.exit_ms - START_MS) // MS_PER_DAY + 1) for r in distinct[0]]]
    assert report([*distinct, *moved], [1], _times(41), HOUR_MS)["overall"]["nested"]["distinct_points"] == 6


def test_the_pbo_says_which_days_its_blocks_leave_out():
    """78 days in 16 blocks: blocks of 4 days, the oldest 14 days are not in any block, and the report says so."""
    overall = report(_random_grid(4, 78), [1], _times(78), HOUR_MS, select_on="pool")["overall"]
    detail = overall["nested"]["pbo_detail"]
    assert (detail["n_splits"], detail["block_days"], detail["days"], detail["dropped_days"]) == (16, 4, 78, 14)
    assert detail["first_day"] == "2021-01-15"  # START_MS is 2021-01-01: days 0..13 left out
