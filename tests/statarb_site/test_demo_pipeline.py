"""`manage.py demo_pipeline`, the batch part of `make demo`: data check, import, replay, screening, grading, and the
replay's KPIs and halts printed at the end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from notifications.models import Notification
from pairs.models import Candle, Instrument, Level, Pair, StrategyConfig
from pairs.services.market_data import candles_import_directory
from risk.models import RiskLimit
from tests.factories import PairFactory
from tests.replay.replay_world import L1_MIN_TRADES, SHORT_WINDOWS, SYMBOLS

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    return settings.VAR_DIR


# The demo replays the last days of the data: the replay tests' symbols, cut after the week they trade in.
DATA_END_MS = int(datetime(2021, 4, 5, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def few_symbols_dir(shared_candles_dir, tmp_path):
    """The replay tests' symbols, their shared files cut at DATA_END_MS into the test's own directory, and the
    replay tests' short windows and level 1."""
    directory = tmp_path / "data"
    directory.mkdir()
    for symbol in SYMBOLS:
        frame = pd.read_csv(shared_candles_dir / f"{symbol}.csv.gz")
        frame[frame["timestamp"] < DATA_END_MS].to_csv(directory / f"{symbol}.csv.gz", index=False)
    config = StrategyConfig.current()
    for name, value in SHORT_WINDOWS.items():
        setattr(config, name, value)
    config.save()
    Level.objects.filter(number=1).update(min_trades=L1_MIN_TRADES)
    return directory


def test_without_data_it_stops_naming_the_variable(var_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("not a candle file")
    with pytest.raises(CommandError, match=rf"^no candles stored and STATARB_DATA_DIR={empty} holds no candle "
                                           r"file\. Set STATARB_DATA_DIR to a directory"):
        call_command("demo_pipeline", data=empty, stdout=StringIO())
    with pytest.raises(CommandError, match=r"STATARB_DATA_DIR=/no/such/dir is unusable \(/no/such/dir: no such "):
        call_command("demo_pipeline", data="/no/such/dir", stdout=StringIO())
    monkeypatch.delenv("STATARB_DATA_DIR", raising=False)
    with pytest.raises(CommandError, match=r"no candles stored and STATARB_DATA_DIR is not set\. .*does not fetch"):
        call_command("demo_pipeline", stdout=StringIO())
    assert not Candle.objects.exists()


def test_the_data_directory_comes_from_the_environment(var_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STATARB_DATA_DIR", str(tmp_path))
    with pytest.raises(CommandError, match=rf"STATARB_DATA_DIR={tmp_path} holds no candle file"):
        call_command("demo_pipeline", stdout=StringIO())
    # A relative directory is shown resolved as well (make runs from the repository).
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("STATARB_DATA_DIR", tmp_path.name)
    with pytest.raises(CommandError, match=rf"STATARB_DATA_DIR={tmp_path.name} \({tmp_path}\) holds no candle file"):
        call_command("demo_pipeline", stdout=StringIO())


def test_an_import_stopped_half_way_is_resumed_by_the_next_run(var_dir, few_symbols_dir):
    """Ctrl-C during step 1 leaves whole files stored (one transaction each); the next run imported nothing more
    ("kept: candles already stored") and replayed and screened the symbols the first run had reached."""
    first, *rest = sorted(SYMBOLS)
    candles_import_directory(directory=few_symbols_dir, timeframe="1h", exchange="bybit", symbols=[first])
    out = StringIO()

    # Stopped after step 1 by a hold-out longer than the data: what matters here is what step 1 stored.
    with pytest.raises(CommandError, match="holds out more than"):
        call_command("demo_pipeline", data=few_symbols_dir, hold_out_days=10**6, stdout=out, stderr=StringIO())

    assert (f"kept: candles already stored (2020-12-01 to 2021-04-04 UTC); importing the {len(rest)} file(s) of "
            f"{few_symbols_dir} not stored yet (an import stopped before the end)") in out.getvalue()
    stored = dict(Candle.objects.values_list("instrument__symbol").annotate(n=Count("id")))
    assert stored == {symbol: len(pd.read_csv(few_symbols_dir / f"{symbol}.csv.gz")) for symbol in SYMBOLS}

    out = StringIO()
    with pytest.raises(CommandError, match="holds out more than"):
        call_command("demo_pipeline", data=few_symbols_dir, hold_out_days=10**6, stdout=out, stderr=StringIO())
    assert "kept: candles already stored (2020-12-01 to 2021-04-04 UTC)\n" in out.getvalue()


def test_pairs_without_a_replay_are_not_said_to_be_the_first_runs_replay(var_dir, few_symbols_dir):
    """A replay stopped half way (Ctrl-C) leaves its pairs and no var/demo-replay.json; the next run said "kept: pairs
    exist, so the first run's replay stands" of a replay that never finished."""
    candles_import_directory(directory=few_symbols_dir, timeframe="1h", exchange="bybit")
    symbols = sorted(SYMBOLS)
    y, x = (Instrument.objects.get(symbol=s) for s in symbols[:2])
    PairFactory(y_instrument=y, x_instrument=x)
    (var_dir / "demo-selection.json").mkdir()  # stops step 3 before it screens: step 2 is what matters here
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="is a directory"):
        call_command("demo_pipeline", data=few_symbols_dir, replay_days=6, hold_out_days=0, stdout=out, stderr=err)

    assert "kept: pairs exist" not in out.getvalue()
    assert (f"not replayed: pairs exist (a replay needs a database without pairs) and {var_dir / 'demo-replay.json'} "
            "is missing: the first run's replay did not finish") in err.getvalue()


def test_a_bad_replay_length_is_refused(var_dir, few_symbols_dir):
    with pytest.raises(CommandError, match=r"^--replay-days must be at least 1, got 0$"):
        call_command("demo_pipeline", data=few_symbols_dir, replay_days=0, stdout=StringIO())


@pytest.mark.parametrize(("option", "value", "message"), [
    ("replay_days", 10**11, r"^--replay-days must be at most 3650, got 100000000000$"),
    ("hold_out_days", 10**11, r"^--hold-out-days 100000000000 holds out more than the 124 day\(s\) the stored candles "
                              r"span \(2020-12-01 to 2021-04-04 UTC\)$"),
    ("hold_out_days", 125, r"^--hold-out-days 125 holds out more than the 124 day"),
])
def test_a_hold_out_or_replay_beyond_the_calendar_is_refused_not_a_traceback(var_dir, few_symbols_dir, option, value,
                                                                            message):
    # --hold-out-days 99999999999 took the newest bar that many days back: OverflowError.
    with pytest.raises(CommandError, match=message):
        call_command("demo_pipeline", data=few_symbols_dir, stdout=StringIO(), **{option: value})
    assert not Pair.objects.exists()


# Real commits: the replay prints each bar's notifications once the bar commits, halts after theirs.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_replays_with_notifications_on_the_console_then_prints_the_kpis_and_halts(var_dir, few_symbols_dir):
    # A tight daily loss limit, so that the guard has something to do in a short replay.
    RiskLimit.objects.create(account=None, daily_loss_limit_pct=0.001, max_drawdown_pct=0.5, max_open_trades=20)
    out = StringIO()
    call_command("demo_pipeline", data=few_symbols_dir, replay_days=6, hold_out_days=0, stdout=out, stderr=StringIO())
    text = out.getvalue()
    lines = text.splitlines()

    for number in range(1, 5):
        assert any(line.startswith(f"[{number}/4] ") for line in lines), number
    assert f"{len(SYMBOLS)} file(s)" in text
    data = json.loads((var_dir / "demo-replay.json").read_text())
    summary = data["summary"]
    assert (var_dir / "demo-selection.json").exists() and (var_dir / "demo-levels.json").exists()

    # Every notification the replay wrote is held in the database (not sent) and was printed on the console, and
    # only those: the grading after the replay is live work, whose notifications go to the outbox as usual.
    notes = Notification.objects.filter(status=Notification.Status.HELD).order_by("pk")
    assert notes.filter(topic="trade_opened").exists() and notes.filter(severity="critical").exists()
    printed = [line for line in lines if line.startswith(("[info] ", "[warning] ", "[critical] "))]
    assert printed == [f"[{n.severity}] {n.topic}: {n.text.splitlines()[0]}" for n in notes]

    # The KPI block: the replay JSON's figures (the one metrics module), after the last step.
    block = lines[lines.index("Replay KPIs, account 'replay':"):]
    assert lines.index(block[0]) > max(i for i, line in enumerate(lines) if line.startswith("[4/4] "))
    still_open = sum(1 for t in data["trades"] if t["opened_at"] and not t["closed_at"])
    assert block[1] == f"  trades         {summary['total_trades']} finished, {still_open} still open"
    assert summary["total_trades"] > 0
    assert block[2] == f"  win rate       {summary['win_rate']:.2%}"
    assert block[3] == "  profit factor  " + ("n/a" if summary["profit_factor"] is None
                                               else f"{summary['profit_factor']:.2f}")
    assert block[4].startswith(f"  return         {summary['total_return']:+.2%}  (equity 10000.00 -> ")
    assert block[5] == f"  max drawdown   {summary['max_drawdown']:+.2%}"
    assert block[6] == "  Sharpe         " + ("n/a" if summary["sharpe"] is None else f"{summary['sharpe']:.2f}")
    halts = data["halts"]
    assert halts, "the tight daily loss limit should halt the replay account at least once"
    assert block[7] == f"Guard halts: {len(halts)}  (daily loss limit 0.10%, max drawdown 50.00%)"
    for line, halt in zip(block[8:8 + len(halts)], halts, strict=True):
        assert line.startswith(f"  {halt['at']}  trigger {halt['trigger']}")
        assert line.endswith(halt["reason"])
    assert block[8 + len(halts)].startswith(f"Notifications kept in the database as held (not sent): {notes.count()};")
    assert len(block) == 9 + len(halts)  # no login file in this var dir (seed_demo writes it)

    # A second run keeps the candles and the replay (its pairs exist) and shows the first replay's figures again.
    again = StringIO()
    call_command("demo_pipeline", data=few_symbols_dir, replay_days=6, hold_out_days=0, stdout=again,
                 stderr=StringIO())
    second = again.getvalue().splitlines()
    assert second[1].startswith("kept: candles already stored")
    assert any(line.startswith("kept: pairs exist") for line in second)
    assert "Replay KPIs, account 'replay' (replayed by an earlier run, demo-replay.json):" in second
    assert second[second.index(block[7]) - 6] == block[1]


def test_the_last_days_are_held_out_for_the_stored_clock_which_starts_where_the_replay_ended(var_dir, few_symbols_dir,
                                                                                             settings):
    from core.market_clock import market_clock
    from execution.models import SignalState
    from pairs.models import CointegrationRun
    from statarb_site.demo_clock import demo_clock_setup

    call_command("demo_pipeline", data=few_symbols_dir, replay_days=6, hold_out_days=1, stdout=StringIO(),
                 stderr=StringIO())
    # the data end with the 2021-04-04 23:00 bar: the batch reads up to the 2021-04-03 23:00 bar
    batch_end = datetime(2021, 4, 3, 23, tzinfo=UTC)
    assert max(SignalState.objects.values_list("last_bar_time", flat=True)) == batch_end
    # The screening's formation window ends validation_bars before it; the validation runs up to it.
    latest = CointegrationRun.objects.latest("pk")
    assert latest.window_end == batch_end - timedelta(hours=StrategyConfig.current().validation_bars)
    assert latest.parameters["validation_end"] == "2021-04-03T23:00:00Z"
    data = json.loads((var_dir / "demo-replay.json").read_text())
    assert all(t["opened_at"] is None or t["opened_at"] < "2021-04-04" for t in data["trades"])
    # --replay-days 6: six whole days ending with the batch's last one, 2021-03-29 to 2021-04-03 (not seven).
    delay = data["execution_delay"]
    assert (delay["start"], delay["end"]) == ("2021-03-29T00:00:00Z", "2021-04-03T23:00:00Z")
    settings.STATARB_MARKET_CLOCK = "stored"
    clock = demo_clock_setup(bar_seconds=10)
    assert clock.moment == clock.start == datetime(2021, 4, 4, tzinfo=UTC)  # where the replay ended
    assert clock.end == datetime(2021, 4, 5, tzinfo=UTC) and clock.bars_total == 24
    assert market_clock().now() == datetime(2021, 4, 4, tzinfo=UTC)
