"""Degenerate price series in a screening: a market that froze (the same close on every bar) and a symbol that is
an exact multiple of another. Neither may crash a run, become a candidate, or leave NaN or infinity in the stored
rows or the JSON; a pair whose leg froze counts a failure and keeps its last real estimates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pairs.models import CointegrationRun, Instrument, Pair, PairTest
from pairs.services.screening import screening_run
from tests.factories import PairFactory
from tests.pairs.services.test_screening import (
    SYNTHETIC_BARS,
    synthetic_config,
    synthetic_instrument,
    synthetic_universe,
)

pytestmark = pytest.mark.django_db

FLOAT_FIELDS = ("hedge_ratio", "intercept", "adf_stat", "pvalue", "qvalue", "half_life_bars", "hurst", "spread_mean",
                "spread_std")


def _all_finite(rows) -> bool:
    return all(getattr(row, name) is None or math.isfinite(getattr(row, name)) for row in rows for name in FLOAT_FIELDS
               if hasattr(row, name))


def test_an_exact_multiple_and_a_frozen_market_are_never_candidates_and_the_json_is_valid():
    universe = synthetic_universe()
    for symbol, log_closes in universe.items():
        synthetic_instrument(symbol, log_closes)
    synthetic_instrument("DOUBLEUSDT", universe["WALKAUSDT"] + np.log(2.0))  # 2 x WALKA, bar for bar
    synthetic_instrument("FROZENUSDT", np.full(SYNTHETIC_BARS, np.log(7.0)))

    outcome = screening_run(config=synthetic_config(), lookback_bars=500)

    assert outcome.run.status == CointegrationRun.Status.SUCCEEDED
    assert "halted or frozen" in outcome.run.parameters["excluded"]["FROZENUSDT"]
    text = json.dumps(outcome.as_json(), allow_nan=False)  # NaN and Infinity are not JSON
    tests = {(t["y"], t["x"]): t for t in json.loads(text)["tests"]}
    collinear = tests[("DOUBLEUSDT", "WALKAUSDT")]
    assert not collinear["passed"] and not collinear["candidate"]
    assert collinear["adf_stat"] is None and collinear["lag"] is None
    # Neither direction has a p-value to show, nor a family p-value (it was 0.0, the best there is, on the direction
    # kept), since the test is left out of the family.
    for key in [("DOUBLEUSDT", "WALKAUSDT"), ("WALKAUSDT", "DOUBLEUSDT")]:
        assert tests[key]["pvalue"] is tests[key]["family_pvalue"] is tests[key]["qvalue"] is None, tests[key]
    assert not {key for key in Pair.objects.values_list("y_instrument__symbol", "x_instrument__symbol")
                if "DOUBLEUSDT" in key}
    assert ("YLEGUSDT", "XLEGUSDT") in {(t["y"], t["x"]) for t in tests.values() if t["candidate"]}
    assert _all_finite(Pair.objects.all()) and _all_finite(PairTest.objects.all())


def test_a_pair_whose_test_turns_degenerate_counts_a_failure_without_undefined_figures():
    """A traded pair whose x leg became a copy of its y leg (a redenomination, a feed error): its test is undefined.
    The run writes no test row for it and counts a failure; its ADF statistic, lag and p-value read as none (not
    statsmodels' -inf and 0, which would pass any threshold)."""
    universe = synthetic_universe()
    for symbol, log_closes in universe.items():
        synthetic_instrument(symbol, log_closes)
    synthetic_instrument("DOUBLEUSDT", universe["WALKAUSDT"] + np.log(2.0))
    pair = PairFactory(y_instrument=Instrument.objects.get(symbol="DOUBLEUSDT"),
                       x_instrument=Instrument.objects.get(symbol="WALKAUSDT"), hedge_ratio=0.75, intercept=0.1,
                       consecutive_failures=0)

    outcome = screening_run(config=synthetic_config(), lookback_bars=500)

    assert outcome.run.status == CointegrationRun.Status.SUCCEEDED
    pair.refresh_from_db()
    assert pair.consecutive_failures == 1
    # log y = log x + log 2, exactly
    assert pair.hedge_ratio == pytest.approx(1.0) and pair.intercept == pytest.approx(np.log(2.0))
    assert pair.adf_stat is None and pair.adf_lag is None and pair.pvalue is None and pair.last_run == outcome.run
    assert not PairTest.objects.filter(pair=pair).exists()
    assert _all_finite(Pair.objects.all()) and _all_finite(PairTest.objects.all())
