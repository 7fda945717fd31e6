"""The screening run against the database: real candles imported from the shared data and synthetic candles.

The reference numbers are computed here from the candle files themselves (pandas: hourly grid, forward fill,
the last bars) with statsmodels, never from what the screen stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairs.models import Candle, CointegrationRun, Instrument, Level, Pair, PairTest, StrategyConfig
from pairs.quant.multiple_testing import benjamini_hochberg
from pairs.services.market_data import candles_import_directory, candles_upsert
from pairs.services.screening import ENTRY_LEVEL_NUMBER, ScreeningError, screening_run
from tests.factories import InstrumentFactory
from tests.pairs.quant.test_confirmation import close, reference_adf, reference_johansen
from tests.pairs.quant.test_screening import statsmodels_references

pytestmark = pytest.mark.django_db

# Twelve full-range symbols, screened on a 1000-bar formation window ending VALIDATION bars (the default
# validation_bars) before the newest bar.
REAL_SYMBOLS = ["BTCUSDT", "DENTUSDT", "ETHUSDT", "GXSUSDT", "LINKUSDT", "NKNUSDT", "ONEUSDT", "OXTUSDT",
                "SKLUSDT", "VETUSDT", "ZENUSDT", "ZILUSDT"]
LOOKBACK = 1000
VALIDATION = 500
LAST_BAR = datetime(2021, 7, 17, 20, tzinfo=UTC)
FORMATION_END = LAST_BAR - timedelta(hours=VALIDATION)  # 2021-06-27 00:00 UTC
FIRST_BAR = FORMATION_END - timedelta(hours=LOOKBACK - 1)  # 2021-05-16 09:00 UTC


def import_real(directory: Path, symbols: list[str]) -> None:
    summary = candles_import_directory(directory=directory, timeframe="1h", exchange="bybit", symbols=symbols)
    assert [f.error for f in summary.files] == [""] * len(symbols)
    assert summary.rows > 0


def reference_closes(directory: Path, symbols: list[str], bars: int) -> pd.DataFrame:
    """Closes read straight from the files: full hourly grid, forward-filled, the ``bars`` bars ending VALIDATION
    bars before the last."""
    series = {}
    for symbol in symbols:
        frame = pd.read_csv(directory / f"{symbol}.csv.gz", usecols=["timestamp", "close"])
        series[symbol] = pd.Series(frame["close"].to_numpy(dtype="float64"),
                                   index=pd.to_datetime(frame["timestamp"], unit="ms", utc=True))
    start = min(s.index[0] for s in series.values())
    end = max(s.index[-1] for s in series.values())
    grid = pd.date_range(start, end, freq="h")
    frame = pd.DataFrame({symbol: s.reindex(grid).ffill() for symbol, s in series.items()})
    return frame.iloc[-(bars + VALIDATION):-VALIDATION]


def doubled_thresholds_config() -> StrategyConfig:
    """The configuration with ``max_pvalue`` 0.10 and ``max_qvalue`` 0.20: since a pair's family p-value is twice
    its lower p-value (both directions are tested here), these pass exactly the directions the defaults (0.05,
    0.10) passed when the lower p-value itself entered the family. These tests check the run's numbers and writes
    on a window with candidates; at the defaults this 12-symbol window has none."""
    config = StrategyConfig.current()
    config.max_pvalue, config.max_qvalue = 0.10, 0.20
    config.save()
    return config


def pair_keys() -> set[tuple[str, str]]:
    return set(Pair.objects.values_list("y_instrument__symbol", "x_instrument__symbol"))


def test_run_on_real_candles_matches_statsmodels_and_writes_candidates(shared_candles_dir):
    import_real(shared_candles_dir, REAL_SYMBOLS)
    config = doubled_thresholds_config()

    outcome = screening_run(config=config, lookback_bars=LOOKBACK)

    run = CointegrationRun.objects.get()
    assert run.pk == outcome.run.pk
    assert run.status == CointegrationRun.Status.SUCCEEDED
    assert run.error == ""
    assert run.exchange == "bybit" and run.timeframe == "1h" and run.lookback_bars == LOOKBACK
    assert run.n_symbols == 12
    assert run.n_tests == 132
    assert run.window_start == FIRST_BAR
    assert run.window_end == FORMATION_END
    assert run.parameters["validation_bars"] == StrategyConfig.current().validation_bars == VALIDATION
    assert run.duration_seconds is not None and run.duration_seconds > 0
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert run.parameters["excluded"] == {}
    assert run.parameters["confirmation_bars"] == LOOKBACK // 4  # min(500, lookback // 4)
    assert len(run.parameters["instrument_ids"]) == 12

    # The window is the files' own closes on the grid.
    reference = reference_closes(shared_candles_dir, REAL_SYMBOLS, LOOKBACK)
    assert reference.index[0] == FIRST_BAR and reference.index[-1] == FORMATION_END
    assert outcome.window.symbols == REAL_SYMBOLS
    assert list(outcome.window.times) == list(reference.index)
    np.testing.assert_allclose(outcome.window.closes, reference[REAL_SYMBOLS].to_numpy(), rtol=1e-15)

    report = outcome.as_json()
    tests = report["tests"]
    assert len(tests) == 132
    assert {(t["y"], t["x"]) for t in tests} == {(y, x) for y in REAL_SYMBOLS for x in REAL_SYMBOLS if y != x}
    # statsmodels' coint on the files' own log closes.
    directions = [(y, x) for y in REAL_SYMBOLS for x in REAL_SYMBOLS if y != x]
    column = {symbol: k for k, symbol in enumerate(reference.columns)}
    references = statsmodels_references(np.log(reference.to_numpy()), [(column[y], column[x]) for y, x in directions])
    statsmodels = dict(zip(directions, references, strict=True))
    reference_p = np.array([statsmodels[(t["y"], t["x"])]["pvalue"] for t in tests])
    for test in tests:
        expected = statsmodels[(test["y"], test["x"])]
        where = (test["y"], test["x"])
        assert test["pvalue"] == pytest.approx(expected["pvalue"], rel=1e-9, abs=1e-15), where
        assert test["adf_stat"] == pytest.approx(expected["adf_stat"], rel=1e-9), where
        assert test["lag"] == expected["lag"], where
        assert test["hedge_ratio"] == pytest.approx(expected["hedge_ratio"], rel=1e-9), where
    # One direction per unordered pair: the lower statsmodels p-value (then the more negative ADF statistic).
    def rank(key):
        return (statsmodels[key]["pvalue"], statsmodels[key]["adf_stat"])

    preferred = [rank((t["y"], t["x"])) <= rank((t["x"], t["y"])) for t in tests]
    assert [t["preferred_direction"] for t in tests] == preferred
    assert sum(preferred) == 66  # each of the 12 * 11 / 2 unordered pairs once
    # q-values: Benjamini-Hochberg over the run's preferred directions, counting each unordered pair once, each
    # with its family p-value (both directions tested: twice the lower statsmodels p-value, at most 1); none for
    # the other direction.
    kept = np.flatnonzero(preferred)
    family = np.minimum(1.0, 2 * reference_p[kept])
    np.testing.assert_allclose([tests[k]["family_pvalue"] for k in kept], family, rtol=1e-8)
    np.testing.assert_allclose([tests[k]["qvalue"] for k in kept], benjamini_hochberg(family), rtol=1e-8)
    assert all(t["qvalue"] is None and t["family_pvalue"] is None and not t["passed"]
               for t, keep in zip(tests, preferred, strict=True) if not keep)

    # Passing and candidates follow the configuration.
    for test in tests:
        half_life_ok = test["half_life"] is not None and (
            config.min_half_life_bars <= test["half_life"] <= config.max_half_life_bars
        )
        assert test["passed"] == (test["preferred_direction"] and test["family_pvalue"] <= config.max_pvalue
                                  and test["qvalue"] <= config.max_qvalue)
        assert (test["confirmed_out_of_sample"] is not None) == (test["passed"] and half_life_ok)
        assert test["candidate"] == bool(test["confirmed_out_of_sample"])
        # The series statistics are computed for the directions that pass (the ones that can become pairs).
        assert (test["hurst"] is not None) == test["passed"]
        assert (test["mean_crossings"] is not None) == test["passed"]
    by_key = {(t["y"], t["x"]): t for t in tests}
    candidates = {key for key, t in by_key.items() if t["candidate"]}
    # On this formation window (2021-05-16 to 06-27) two directions are confirmed; one direction per unordered pair:
    # NKN/SKL (not SKL/NKN) is the preferred one, and it passes the screen but fails the held-out confirmation.
    assert candidates == {("LINKUSDT", "SKLUSDT"), ("NKNUSDT", "ZENUSDT")}
    assert not any((x, y) in candidates for y, x in candidates)
    assert by_key[("NKNUSDT", "SKLUSDT")]["passed"] and not by_key[("NKNUSDT", "SKLUSDT")]["candidate"]
    assert not by_key[("SKLUSDT", "NKNUSDT")]["passed"]
    assert run.n_passed == sum(t["passed"] for t in tests) > run.n_candidates == len(candidates)

    # Pair rows exactly for the candidates, on the entry level, active.
    assert pair_keys() == candidates
    entry = Level.objects.get(number=ENTRY_LEVEL_NUMBER)
    for pair in Pair.objects.select_related("y_instrument", "x_instrument"):
        test = by_key[(pair.y_instrument.symbol, pair.x_instrument.symbol)]
        assert pair.level_id == entry.pk
        assert pair.status == Pair.Status.ACTIVE
        assert pair.timeframe == "1h"
        assert pair.pvalue == pytest.approx(test["pvalue"], rel=1e-12)
        assert pair.hedge_ratio == pytest.approx(test["hedge_ratio"], rel=1e-12)
        assert pair.last_run_id == run.pk
        assert pair.last_passed_at is not None and pair.consecutive_failures == 0
        assert pair.johansen_passed is True
    # One test row per pair for the run.
    assert PairTest.objects.filter(run=run).count() == len(candidates)
    assert set(PairTest.objects.filter(run=run).values_list("pair_id", flat=True)) == set(
        Pair.objects.values_list("pk", flat=True)
    )


def test_run_confirmations_match_statsmodels_adfuller_and_coint_johansen(shared_candles_dir):
    """The run confirms its candidates in one batch; every stored confirmation is statsmodels' own numbers."""
    import_real(shared_candles_dir, REAL_SYMBOLS)
    config = doubled_thresholds_config()
    outcome = screening_run(config=config, lookback_bars=LOOKBACK)

    log_closes = np.log(reference_closes(shared_candles_dir, REAL_SYMBOLS, LOOKBACK)[REAL_SYMBOLS].to_numpy())
    holdout = outcome.run.parameters["confirmation_bars"]
    assert len(outcome.confirmation) >= 10
    outcomes = set()
    for k, check in outcome.confirmation.items():
        y, x = int(outcome.result.y_index[k]), int(outcome.result.x_index[k])
        beta, alpha, stat, _, pvalue = reference_adf(log_closes[:, y], log_closes[:, x], holdout)
        trace, critical, _ = reference_johansen(log_closes[:, [y, x]])
        assert check.formation_hedge_ratio == pytest.approx(beta, rel=1e-12), (y, x)
        assert check.formation_intercept == pytest.approx(alpha, rel=1e-12, abs=1e-12), (y, x)
        assert close(check.holdout_adf_stat, stat), (y, x)
        assert close(check.holdout_pvalue, pvalue), (y, x)
        assert close(check.johansen_trace, trace), (y, x)
        assert check.johansen_critical_95 == critical
        assert check.johansen_passed == (trace > critical)
        assert check.confirmed == (pvalue <= config.confirmation_max_pvalue and trace > critical)
        outcomes.add((check.confirmed, check.johansen_passed))
    # Both verdicts occur on this window, so the flags are really compared.
    assert (True, True) in outcomes and any(not confirmed for confirmed, _ in outcomes)
    stored = {p.pk: p for p in Pair.objects.all()}
    assert stored
    for pair in stored.values():
        k = next(k for k, c in outcome.confirmation.items()
                 if outcome.window.instrument_ids[outcome.result.y_index[k]] == pair.y_instrument_id
                 and outcome.window.instrument_ids[outcome.result.x_index[k]] == pair.x_instrument_id)
        assert pair.johansen_trace == pytest.approx(outcome.confirmation[k].johansen_trace, rel=1e-12)
        # Every latest-test field is written (one prepared UPDATE per pair).
        test = outcome.as_json()["tests"][k]
        for field, key in (("pvalue", "pvalue"), ("qvalue", "qvalue"), ("adf_stat", "adf_stat"), ("adf_lag", "lag"),
                           ("intercept", "intercept"), ("half_life_bars", "half_life"), ("hurst", "hurst"),
                           ("mean_crossings", "mean_crossings"), ("spread_mean", "spread_mean"),
                           ("spread_std", "spread_std"), ("screening_zscore", "zscore"),
                           ("return_correlation", "return_correlation")):
            assert getattr(pair, field) == pytest.approx(test[key], rel=1e-12), field
        assert pair.last_run_id == outcome.run.pk and pair.consecutive_failures == 0
        assert pair.last_tested_at == pair.last_passed_at == pair.updated_at is not None


def test_run_shared_over_forked_processes_gives_the_same_results(shared_candles_dir, settings):
    import_real(shared_candles_dir, REAL_SYMBOLS)
    config = doubled_thresholds_config()
    settings.STATARB_SCREEN_PROCESSES = 1
    single = screening_run(config=config, lookback_bars=LOOKBACK).as_json()
    settings.STATARB_SCREEN_PROCESSES = 2
    forked = screening_run(config=config, lookback_bars=LOOKBACK).as_json()
    assert forked["tests"] == single["tests"]
    assert forked["n_candidates"] == single["n_candidates"] > 0


def test_runs_again_without_duplicates_and_count_consecutive_failures(shared_candles_dir):
    import_real(shared_candles_dir, REAL_SYMBOLS)
    config = doubled_thresholds_config()
    first = screening_run(config=config, lookback_bars=LOOKBACK)
    pairs_after_first = {p.pk: p for p in Pair.objects.all()}
    assert len(pairs_after_first) == first.run.n_candidates > 0

    # Second run: nothing may pass (q <= 0), so every existing pair records a failure.
    config.max_qvalue = 0.0
    config.save()
    second = screening_run(config=StrategyConfig.current(), lookback_bars=LOOKBACK)

    assert second.run.status == CointegrationRun.Status.SUCCEEDED
    assert second.run.n_passed == 0 and second.run.n_candidates == 0
    assert second.run.parameters["max_qvalue"] == 0.0
    assert Pair.objects.count() == len(pairs_after_first)  # no duplicates
    for pair in Pair.objects.all():
        before = pairs_after_first[pair.pk]
        assert pair.consecutive_failures == 1
        assert pair.last_passed_at == before.last_passed_at  # unchanged by a failure
        assert pair.last_tested_at > before.last_tested_at
        assert pair.last_run_id == second.run.pk
        assert pair.level_id == before.level_id
    assert PairTest.objects.filter(run=second.run).count() == len(pairs_after_first)
    assert not PairTest.objects.filter(run=second.run, passed=True).exists()
    per_pair_per_run = PairTest.objects.values("pair_id", "run_id").distinct().count()
    assert per_pair_per_run == PairTest.objects.count() == 2 * len(pairs_after_first)

    # The same run again (the same window, the same settings): nothing new, no second failure counted.
    screening_run(config=StrategyConfig.current(), lookback_bars=LOOKBACK)
    assert set(Pair.objects.values_list("consecutive_failures", flat=True)) == {1}

    # Third run passes again: the failure count resets and nothing is duplicated.
    config.max_qvalue = 0.20
    config.save()
    third = screening_run(config=StrategyConfig.current(), lookback_bars=LOOKBACK)
    assert third.run.n_candidates == first.run.n_candidates
    assert Pair.objects.count() == len(pairs_after_first)
    assert set(Pair.objects.values_list("consecutive_failures", flat=True)) == {0}
    for pair in Pair.objects.all():
        assert pair.last_passed_at > pairs_after_first[pair.pk].last_passed_at
        assert pair.tests.count() == 4
    assert CointegrationRun.objects.count() == 4


# --- synthetic candles -------------------------------------------------------------------------------------------

SYNTHETIC_BARS = 600
SYNTHETIC_VALIDATION = 100
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle_frame(log_closes: np.ndarray, start: datetime = T0) -> pd.DataFrame:
    closes = np.round(np.exp(log_closes), 8)
    timestamps = int(start.timestamp() * 1000) + 3_600_000 * np.arange(len(closes), dtype=np.int64)
    return pd.DataFrame({"timestamp": timestamps, "open": closes, "high": closes * 1.001, "low": closes * 0.999,
                         "close": closes, "volume": np.full(len(closes), 10.0)})


def synthetic_instrument(symbol: str, log_closes: np.ndarray, start: datetime = T0) -> Instrument:
    instrument = InstrumentFactory(symbol=symbol, base=symbol.removesuffix("USDT"), exchange="bybit")
    assert candles_upsert(instrument=instrument, timeframe="1h", candles=candle_frame(log_closes, start)) == len(
        log_closes
    )
    return instrument


def synthetic_universe(seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = SYNTHETIC_BARS
    base = np.log(50.0) + np.cumsum(rng.normal(0.0, 0.01, n))
    noise = np.zeros(n)
    shocks = rng.normal(0.0, 0.004, n)
    for t in range(1, n):
        noise[t] = 0.85 * noise[t - 1] + shocks[t]
    return {
        "XLEGUSDT": base,
        "YLEGUSDT": 0.4 + 0.9 * base + noise,  # cointegrated with XLEG by construction
        "WALKAUSDT": np.log(3.0) + np.cumsum(rng.normal(0.0, 0.01, n)),
        "WALKBUSDT": np.log(0.2) + np.cumsum(rng.normal(0.0, 0.01, n)),
    }


def synthetic_config() -> StrategyConfig:
    """The configuration with a history requirement the 600 synthetic bars meet (the default asks 2000) and 100
    validation bars after the 500-bar formation window."""
    config = StrategyConfig.current()
    config.min_history_bars = 500
    config.validation_bars = SYNTHETIC_VALIDATION
    config.save()
    return config


def test_constructed_pair_becomes_a_candidate_and_independent_walks_do_not():
    for symbol, log_closes in synthetic_universe().items():
        synthetic_instrument(symbol, log_closes)

    outcome = screening_run(config=synthetic_config(), lookback_bars=500)

    run = outcome.run
    assert run.status == CointegrationRun.Status.SUCCEEDED
    assert run.n_symbols == 4 and run.n_tests == 12
    assert run.window_end == T0 + timedelta(hours=SYNTHETIC_BARS - 1 - SYNTHETIC_VALIDATION)
    assert run.window_start == T0 + timedelta(hours=SYNTHETIC_BARS - 500 - SYNTHETIC_VALIDATION)
    by_key = {(t["y"], t["x"]): t for t in outcome.as_json()["tests"]}
    constructed = by_key[("YLEGUSDT", "XLEGUSDT")]
    assert constructed["pvalue"] < 1e-4
    assert constructed["hedge_ratio"] == pytest.approx(0.9, rel=0.1)
    assert constructed["candidate"] and constructed["confirmed_out_of_sample"] and constructed["johansen_passed"]
    assert ("YLEGUSDT", "XLEGUSDT") in pair_keys()
    # Nothing involving an independent walk is a candidate.
    independent = {key for key in by_key if {"WALKAUSDT", "WALKBUSDT"} & set(key)}
    assert not any(by_key[key]["candidate"] for key in independent)
    assert pair_keys() <= {("YLEGUSDT", "XLEGUSDT"), ("XLEGUSDT", "YLEGUSDT")}
    assert not any(by_key[key]["passed"] for key in [("WALKAUSDT", "WALKBUSDT"), ("WALKBUSDT", "WALKAUSDT")])


def test_symbol_with_short_synthetic_history_is_excluded_and_named():
    universe = synthetic_universe()
    for symbol, log_closes in universe.items():
        synthetic_instrument(symbol, log_closes)
    # Listed 200 bars before the end: no bar at the start of a 500-bar window.
    late_start = T0 + timedelta(hours=SYNTHETIC_BARS - 200)
    synthetic_instrument("LATEUSDT", universe["WALKAUSDT"][-200:], start=late_start)

    outcome = screening_run(config=synthetic_config(), lookback_bars=500)

    assert outcome.run.n_symbols == 4
    assert "LATEUSDT" not in outcome.window.symbols
    assert "short history" in outcome.run.parameters["excluded"]["LATEUSDT"]
    assert set(outcome.run.parameters["excluded"]) == {"LATEUSDT"}
    assert outcome.as_json()["excluded_symbols"] == outcome.run.parameters["excluded"]
    assert all("LATEUSDT" not in (t["y"], t["x"]) for t in outcome.as_json()["tests"])


def test_real_symbol_with_short_history_is_excluded_and_named(shared_candles_dir):
    # LPTUSDT starts 2021-05-28 05:00, after the start of a 1300-bar window ending 2021-06-27 00:00.
    import_real(shared_candles_dir, ["BTCUSDT", "ETHUSDT", "LPTUSDT"])

    outcome = screening_run(config=StrategyConfig.current(), lookback_bars=1300)

    run = CointegrationRun.objects.get(pk=outcome.run.pk)
    assert run.window_start == FORMATION_END - timedelta(hours=1299)
    assert run.n_symbols == 2 and run.n_tests == 2
    assert list(run.parameters["excluded"]) == ["LPTUSDT"]
    assert "short history" in run.parameters["excluded"]["LPTUSDT"]
    lpt = Instrument.objects.get(symbol="LPTUSDT")
    assert lpt.pk not in run.parameters["instrument_ids"]
    assert Candle.objects.filter(instrument=lpt).count() > 1000  # it has candles, just not enough history


def test_fewer_than_two_symbols_with_history_is_a_clear_error(shared_candles_dir):
    import_real(shared_candles_dir, ["BTCUSDT", "LPTUSDT"])

    with pytest.raises(ScreeningError, match=r"only 1 symbol\(s\) with 2000 bars .*import or fetch candles first"):
        screening_run(config=StrategyConfig.current(), lookback_bars=1300)

    assert not CointegrationRun.objects.exists()  # nothing recorded for a run that could not start
    assert not Pair.objects.exists()


def test_empty_database_is_a_clear_error():
    with pytest.raises(ScreeningError, match=r"no 1h candles of bybit are stored: import or fetch candles first"):
        screening_run(config=StrategyConfig.current(), lookback_bars=500)
    assert not CointegrationRun.objects.exists()


def test_too_short_lookback_is_refused():
    with pytest.raises(ScreeningError, match="too short"):
        screening_run(config=StrategyConfig.current(), lookback_bars=50)
