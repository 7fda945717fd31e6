"""`manage.py walkforward`: stored candles in, the walk-forward JSON and HTML out; bad arguments named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from pairs.models import Candle, StrategyConfig
from tests.factories import InstrumentFactory
from tests.pairs.quant.walkforward_data import market
from tests.pairs.services.test_screening import import_real

pytestmark = pytest.mark.django_db

STATS_KEYS = {"trades", "win_rate", "profit_factor", "profit_factor_ci", "sharpe", "deflated_sharpe"}
SMALL = {"lookback_bars": 600, "min_history_bars": 600, "confirmation_bars": 150, "zscore_window_bars": 200}


@pytest.fixture
def stored_market():
    """The synthetic market of the engine tests stored as candles (4 symbols, hourly from 2021-01-01)."""
    StrategyConfig.objects.update_or_create(pk=1, defaults={"exchange": "bybit", **SMALL})
    m = market(1700, late_listing_bar=300)  # to 2021-03-12 19:00
    rows = []
    for k, symbol in enumerate(m.symbols):
        instrument = InstrumentFactory(symbol=symbol, base=symbol[:-4])
        for t in np.flatnonzero(np.isfinite(m.closes[:, k])):
            price = Decimal(f"{m.closes[t, k]:.8f}")
            rows.append(Candle(instrument=instrument, timeframe="1h", open=price, high=price, low=price, close=price,
                               volume=Decimal(f"{m.turnover[t, k] / m.closes[t, k]:.4f}"),
                               open_time=datetime.fromtimestamp(m.times_ms[t] / 1000, tz=UTC)))
    Candle.objects.bulk_create(rows, batch_size=2000)
    return m


def _run(*args) -> str:
    out = StringIO()
    call_command("walkforward", *args, "-v0", stdout=out)
    return out.getvalue()


def _check_shape(data: dict, *, grid: bool) -> None:
    assert set(data) == {"periods", "overall", "execution"}
    assert set(data["overall"]) == ({"pool", "levels", "pbo", "nested"} if grid else {"pool", "levels"})
    assert set(data["overall"]["levels"]) == {"1"}  # levels 2 and 3 need live evidence: a backtest can't reach them
    for row in data["periods"]:
        assert set(row) == {"formation_start", "trade_start", "trade_end", "pool", "levels"}
        assert set(row["pool"]) == STATS_KEYS and set(row["levels"]["1"]) == STATS_KEYS


def test_walkforward_writes_json_and_a_self_contained_html_report(stored_market, tmp_path):
    path, page = tmp_path / "wf.json", tmp_path / "wf.html"
    out = _run("--start", "2021-02-17", "--end", "2021-03-09", "--json", str(path), "--report", str(page))
    data = json.loads(path.read_text())
    _check_shape(data, grid=False)
    assert [p["trade_start"] for p in data["periods"]] == ["2021-02-17T00:00:00Z", "2021-02-24T00:00:00Z",
                                                           "2021-03-03T00:00:00Z"]
    assert data["periods"][-1]["trade_end"] == "2021-03-10T00:00:00Z"
    assert data["periods"][0]["formation_start"] == "2021-01-02T04:00:00Z"  # 600 + 500 bars before the start
    assert data["overall"]["pool"]["trades"] >= 6  # the constructed pair trades its two spikes every 96 bars
    assert "3 periods x 1 point(s), 4 symbols, execution delay 0 bar(s)" in out
    assert data["execution"]["execution_delay_bars"] == 0  # the configuration's
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "Overall" in html
    assert "<script" not in html and "http" not in html  # nothing fetched from anywhere


def test_walkforward_with_a_grid_reports_pbo_and_the_nested_selection(stored_market, tmp_path):
    grid = tmp_path / "grid.yaml"
    # The last point sets the default entry, so it trades as point 0 does; on this market (spikes beyond 2.5) so
    # does entry 2.5: three of the four points are one trial of the grid, not three.
    grid.write_text("points:\n  - {}\n  - {entry_z: 2.5}\n  - {exit_z: 0.5, trade_zscore: frozen}\n"
                    "  - {entry_z: 2.0}\n")
    path, page = tmp_path / "wf.json", tmp_path / "wf.html"
    out = _run("--start", "2021-02-17", "--end", "2021-03-09", "--grid", str(grid), "--json", str(path),
               "--report", str(page))
    data = json.loads(path.read_text())
    _check_shape(data, grid=True)
    overall = data["overall"]
    assert 0 <= overall["pbo"] <= 1
    assert overall["nested"]["choices"][0] == 0 and len(overall["nested"]["choices"]) == 3
    assert [p["parameters"] for p in overall["nested"]["points"]] == [
        {}, {"entry_z": 2.5}, {"exit_z": 0.5, "trade_zscore": "frozen"}, {"entry_z": 2.0}]
    assert [p["same_as"] for p in overall["nested"]["points"]] == [None, 0, None, 0]
    assert overall["nested"]["distinct_points"] == 2
    # 21 days in 16 blocks of 1 day: the oldest 5 are in no block, and the summary and the report say so.
    detail = overall["nested"]["pbo_detail"]
    assert (detail["points"], detail["days"], detail["block_days"], detail["dropped_days"]) == (2, 21, 1, 5)
    assert detail["first_day"] == "2021-02-22"
    assert "(2 distinct of 4 points; 16 blocks of 1 days, the oldest 5 of 21 days left out)" in out
    assert "over 2 distinct points, 16 blocks of 1 days from 2021-02-22 (the oldest 5 of 21 days left out)" in \
        page.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "2021-02-30"], "--start '2021-02-30' is not an ISO 8601 date"),
    (["--end", "yesterday"], "--end 'yesterday' is not an ISO 8601 date"),
    (["--start", "2021-02-20", "--end", "2021-02-10"], "--end 2021-02-10 is not after --start 2021-02-20"),
    (["--start", "2021-01-10"], "--start 2021-01-10 00:00 is too early: the first period needs 1100 bars"),
    # No --end: the error is about --start, the one option given (it used to blame "--end 2021-03-12 19:00").
    (["--start", "2022-01-01"], "--start 2022-01-01 00:00 is after the last stored candle (2021-03-12 19:00 UTC): "
                                "nothing is left to trade; the latest start is 2021-03-12 18:00 UTC"),
    (["--start", "2021-03-12T19:00"], "--start 2021-03-12 19:00 is at the last stored candle (2021-03-12 19:00 UTC)"),
    (["--start", "2022-01-01", "--end", "2022-01-31"], "--start 2022-01-01 00:00 is after the last stored candle"),
    (["--symbols", "AAAUSDT,NOPEUSDT"], "--symbols: unknown symbol(s) NOPEUSDT"),
    (["--every-days", "nan"], "--every-days must be a number"),
    (["--execution-delay-bars", "25"], "--execution-delay-bars: execution_delay_bars must be an integer from 0 to 24"),
])
def test_bad_arguments_are_command_errors_naming_them(stored_market, args, message):
    with pytest.raises(CommandError) as caught:
        _run(*args)
    assert message in str(caught.value)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("g.json", "[{\"entry_z\": 2.0", "not valid json"),
    ("g.json", "{\"entry_z\": 2.0}", "expected a non-empty list of parameter points"),
    ("g.json", "[]", "expected a non-empty list"),
    ("g.json", "[{}, 3]", "point 1 is not an object"),
    ("g.json", "[{\"entry\": 2.0}]", "point 0: unknown parameter(s) entry"),
    ("g.json", "[{\"lookback_bars\": \"2000\"}]", "point 0: parameter lookback_bars must be a int"),
    ("g.json", "[{\"entry_z\": 5.0}]", "point 0: stop_z must be above entry_z"),
    # Taken, and the walk-forward answered 0 trades without saying why:
    ("g.json", "[{\"zscore_window_bars\": 1}]", "point 0: zscore_window_bars must be at least 2, got 1"),
    ("g.json", "[{\"max_pvalue\": 5}]", "point 0: max_pvalue must be a probability from 0 to 1, got 5.0"),
    ("g.json", "[{\"confirmation_max_pvalue\": -0.1}]", "point 0: confirmation_max_pvalue must be a probability"),
    ("g.yaml", "points: [entry_z: 2", "not valid yaml"),
])
def test_a_malformed_grid_is_a_command_error_naming_the_problem(stored_market, tmp_path, name, text, message):
    grid = tmp_path / name
    grid.write_text(text)
    with pytest.raises(CommandError) as caught:
        _run("--grid", str(grid))
    assert message in str(caught.value) and str(grid) in str(caught.value)


def test_a_missing_grid_file_is_a_command_error(stored_market, tmp_path):
    with pytest.raises(CommandError, match="cannot be read"):
        _run("--grid", str(tmp_path / "none.json"))


def test_walkforward_on_real_shared_candles(shared_candles_dir, tmp_path):
    symbols = ["ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT"]
    import_real(shared_candles_dir, symbols)
    path = tmp_path / "real.json"
    _run("--symbols", ",".join(symbols), "--start", "2021-05-01", "--end", "2021-05-14", "--json", str(path))
    data = json.loads(path.read_text())
    _check_shape(data, grid=False)
    assert [p["trade_start"] for p in data["periods"]] == ["2021-05-01T00:00:00Z", "2021-05-08T00:00:00Z"]
    assert data["periods"][0]["formation_start"] == "2021-01-16T20:00:00Z"  # 2,500 bars before
    pool = data["overall"]["pool"]
    assert pool["trades"] == sum(p["pool"]["trades"] for p in data["periods"])


def test_the_execution_delay_option_fills_later_and_the_reports_say_so(stored_market, tmp_path):
    """``--execution-delay-bars 1``: the same decisions, each fill one bar later; the JSON and HTML name the delay."""
    StrategyConfig.objects.filter(pk=1).update(execution_delay_bars=0)
    runs = {}
    for delay in (0, 1):
        path, page = tmp_path / f"wf{delay}.json", tmp_path / f"wf{delay}.html"
        out = _run("--start", "2021-02-17", "--end", "2021-03-09", "--execution-delay-bars", str(delay),
                   "--json", str(path), "--report", str(page))
        assert f"execution delay {delay} bar(s)" in out
        runs[delay] = json.loads(path.read_text())
        assert runs[delay]["execution"]["execution_delay_bars"] == delay
        assert runs[delay]["execution"]["fills"] == f"open of the bar {1 + delay} after the signal bar"
        assert f"execution delay <b>{delay} bar(s)</b>" in page.read_text()
    # The synthetic spikes revert within a bar: one bar later, the entries miss the reversion.
    assert runs[1]["overall"]["pool"]["win_rate"] < runs[0]["overall"]["pool"]["win_rate"]


def test_the_latest_start_the_error_names_is_accepted(stored_market):
    """The bar before the last stored candle, which the "--start is after the last stored candle" error offers."""
    assert "1 periods x 1 point(s)" in _run("--start", "2021-03-12T18:00")
