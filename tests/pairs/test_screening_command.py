"""`manage.py select_pairs` on real candles imported from the shared data."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from statsmodels.tsa.stattools import coint

from core.models import AuditEntry
from pairs.models import CointegrationRun, Instrument, Pair, PairTest
from tests.pairs.services.test_screening import LAST_BAR, import_real, reference_closes

pytestmark = pytest.mark.django_db

SYMBOLS = ["ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "ONEUSDT", "OXTUSDT", "VETUSDT", "ZILUSDT"]
TEST_KEYS = {"y", "x", "hedge_ratio", "intercept", "adf_stat", "lag", "pvalue", "qvalue", "half_life", "hurst",
             "passed", "preferred_direction"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def test_select_pairs_writes_every_test_to_json(shared_candles_dir, tmp_path):
    import_real(shared_candles_dir, SYMBOLS)
    path = tmp_path / "s.json"
    out = StringIO()

    call_command("select_pairs", lookback=1000, json_path=path, stdout=out, verbosity=0)

    entry = AuditEntry.objects.get(action="select_pairs")
    assert entry.channel == "command" and entry.actor_label.endswith("(manage.py select_pairs)")
    report = json.loads(path.read_text())
    assert {"timeframe", "window_start", "window_end", "n_symbols", "tests"} <= set(report)
    assert report["timeframe"] == "1h"
    assert ISO_Z.match(report["window_start"]) and ISO_Z.match(report["window_end"])
    # The formation window: 1000 bars ending validation_bars (500) before the newest bar, 2021-07-17 20:00.
    assert report["window_start"] == "2021-05-16T09:00:00Z"
    assert report["window_end"] == "2021-06-27T00:00:00Z"
    assert datetime.fromisoformat(report["window_end"]) == LAST_BAR - timedelta(hours=500)
    assert report["parameters"]["validation_end"] == "2021-07-17T20:00:00Z"
    n = report["n_symbols"]
    assert n == len(SYMBOLS)
    tests = report["tests"]
    assert len(tests) == n * (n - 1)
    assert sum(t["preferred_direction"] for t in tests) == n * (n - 1) // 2
    assert {(t["y"], t["x"]) for t in tests} == {(y, x) for y in SYMBOLS for x in SYMBOLS if y != x}
    for test in tests:
        assert TEST_KEYS <= set(test), set(TEST_KEYS) - set(test)
        assert isinstance(test["lag"], int) and test["lag"] >= 0
        if test["preferred_direction"]:
            assert 0.0 <= test["pvalue"] <= test["qvalue"] <= 1.0
        else:  # one direction per unordered pair: the other is outside the false-discovery family and can't pass
            assert test["qvalue"] is None and not test["passed"]
        assert isinstance(test["passed"], bool)
        assert (test["hurst"] is not None) == test["passed"]  # series statistics only for passing directions

    # A few p-values (the candidates and some others) against statsmodels on the files' own closes.
    log_closes = np.log(reference_closes(shared_candles_dir, SYMBOLS, 1000))
    by_key = {(t["y"], t["x"]): t for t in tests}
    for key in [("VETUSDT", "ZILUSDT"), ("OXTUSDT", "ONEUSDT"), ("BTCUSDT", "ETHUSDT"), ("LTCUSDT", "ADAUSDT")]:
        expected = coint(log_closes[key[0]].to_numpy(), log_closes[key[1]].to_numpy(), trend="c", autolag="aic")[1]
        assert by_key[key]["pvalue"] == pytest.approx(expected, rel=1e-9, abs=1e-15), key
    assert any(t["passed"] for t in tests) and not by_key[("BTCUSDT", "ETHUSDT")]["passed"]

    # The run and its pairs are stored, and the command says what it did.
    run = CointegrationRun.objects.get()
    assert run.status == CointegrationRun.Status.SUCCEEDED
    assert run.n_tests == len(tests) and run.n_symbols == n
    assert report["run_id"] == run.pk
    assert set(Pair.objects.values_list("y_instrument__symbol", "x_instrument__symbol")) == {
        (t["y"], t["x"]) for t in tests if t["candidate"]
    }
    assert PairTest.objects.filter(run=run).count() == Pair.objects.count() > 0
    text = out.getvalue()
    assert f"run {run.pk}: {n} symbols" in text
    assert f"{len(tests)} tests" in text
    assert f"wrote {path}" in text


def test_select_pairs_on_a_subset_of_symbols(shared_candles_dir, tmp_path):
    import_real(shared_candles_dir, SYMBOLS)
    path = tmp_path / "subset.json"

    call_command("select_pairs", lookback=500, json_path=path, symbols="vetusdt, ZILUSDT,oneusdt", verbosity=0,
                 stdout=StringIO())

    report = json.loads(path.read_text())
    assert report["n_symbols"] == 3
    assert len(report["tests"]) == 6
    assert {t["y"] for t in report["tests"]} == {"ONEUSDT", "VETUSDT", "ZILUSDT"}
    assert report["window_start"] == "2021-06-06T05:00:00Z"  # 500 bars ending 500 bars before the newest
    assert CointegrationRun.objects.get().lookback_bars == 500


def test_select_pairs_refuses_symbols_it_cannot_screen_naming_them_before_anything_is_stored(shared_candles_dir):
    # A typo and a symbol excluded by hand were left out silently: the run over the others was stored and audited.
    import_real(shared_candles_dir, SYMBOLS)
    Instrument.objects.filter(symbol="ZILUSDT").update(excluded=True)

    with pytest.raises(CommandError) as info:
        call_command("select_pairs", lookback=500, symbols="vetusdt,oneusdt,ZILUSDT,VETUSD", verbosity=0,
                     stdout=StringIO())

    assert str(info.value) == (
        "symbol(s) asked for that the screening can't take: no instrument of bybit: VETUSD; not in the run's "
        "universe (excluded by hand, not trading, quoted in another currency than USDT, or 24h turnover below "
        "min_turnover_24h): ZILUSDT")
    assert not CointegrationRun.objects.exists()
    assert not AuditEntry.objects.filter(action="select_pairs").exists()


def test_select_pairs_without_a_json_path_writes_no_file(shared_candles_dir, tmp_path, monkeypatch):
    import_real(shared_candles_dir, ["BTCUSDT", "ETHUSDT"])
    monkeypatch.chdir(tmp_path)
    out = StringIO()

    call_command("select_pairs", lookback=300, stdout=out, verbosity=0)

    assert "2 symbols" in out.getvalue() and "wrote" not in out.getvalue()
    assert list(tmp_path.iterdir()) == []
    assert CointegrationRun.objects.get().n_tests == 2


def test_select_pairs_on_an_empty_database_is_a_command_error(tmp_path):
    path = tmp_path / "s.json"

    with pytest.raises(CommandError, match=r"import or fetch candles"):
        call_command("select_pairs", lookback=1000, json_path=path, verbosity=0, stdout=StringIO())

    assert not path.exists()
    assert not CointegrationRun.objects.exists()


@pytest.mark.parametrize(
    ("lookback", "message"),
    [
        (999_999_999, "--lookback 999999999 is more than the 5493 bars the stored 1h candles of bybit span "
                      "(2020-12-01 00:00 to 2021-07-17 20:00 UTC)"),
        (0, "--lookback must be a positive number of bars, got 0"),
        (-5, "--lookback must be a positive number of bars, got -5"),
    ],
)  # fmt: skip
def test_select_pairs_refuses_a_lookback_it_cannot_fill(shared_candles_dir, lookback, message):
    import_real(shared_candles_dir, ["BTCUSDT", "ETHUSDT"])

    with pytest.raises(CommandError) as info:
        call_command("select_pairs", lookback=lookback, verbosity=0, stdout=StringIO())

    assert str(info.value) == message
    assert not CointegrationRun.objects.exists()


def test_select_pairs_checks_the_json_path_before_it_screens(shared_candles_dir, tmp_path):
    import_real(shared_candles_dir, ["BTCUSDT", "ETHUSDT"])
    path = tmp_path / "missing" / "s.json"

    with pytest.raises(CommandError) as info:
        call_command("select_pairs", lookback=300, json_path=path, verbosity=0, stdout=StringIO())

    assert str(info.value) == f"--json {path}: the directory {path.parent} does not exist"
    assert not CointegrationRun.objects.exists()
    assert not Pair.objects.exists()


@pytest.mark.parametrize("end", ["0001-01-01", "1969-06-01T00:00", "2021-07-24T25:00"])
def test_select_pairs_end_outside_the_calendar_is_an_error_naming_the_option_not_a_traceback(end,
                                                                                             shared_candles_dir):
    # 0001-01-01 was taken, and the formation window before it raised OverflowError.
    import_real(shared_candles_dir, ["BTCUSDT", "ETHUSDT"])

    with pytest.raises(CommandError) as info:
        call_command("select_pairs", "--end", end, stdout=StringIO(), stderr=StringIO())

    assert str(info.value).startswith(f"Error: argument --end: {end!r} is ")
    assert not CointegrationRun.objects.exists()


def test_select_pairs_end_after_the_newest_bar_is_refused_and_stores_no_run(shared_candles_dir):
    # The formation window ended validation_bars before a moment no bar has reached: the run was stored, its pairs
    # counted a failure, and its validation end was in the future.
    import_real(shared_candles_dir, ["BTCUSDT", "ETHUSDT", "LTCUSDT"])
    end = LAST_BAR + timedelta(hours=100)

    with pytest.raises(CommandError) as info:
        call_command("select_pairs", lookback=300, end=end.replace(tzinfo=None), stdout=StringIO(), verbosity=0)

    assert str(info.value) == (f"--end {end:%Y-%m-%dT%H:%M} is after the newest stored 1h bar of bybit, "
                               f"{LAST_BAR:%Y-%m-%dT%H:%M} UTC")
    assert not CointegrationRun.objects.exists()
    assert not AuditEntry.objects.filter(action="select_pairs").exists()
