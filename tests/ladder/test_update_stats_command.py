"""The update_stats command (maintenance, statistics, grading, JSON) and the pair admin's promote/demote actions."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core.models import AuditEntry
from pairs.models import Level, LevelChange, Pair, PairStatistics
from pairs.services.maintenance import MaintenanceSummary
from tests.factories import InstrumentFactory, PairFactory
from tests.ladder.test_services import LAST_BAR, make_market

pytestmark = pytest.mark.django_db

WINDOW_KEYS = {"trades", "win_rate", "profit_factor", "total_return", "max_drawdown", "sharpe"}
MAINTENANCE_KEYS = {"newest_bar", "feed_stale", "candles_deleted", "stale_symbols", "pairs_suspended",
                    "pairs_resumed", "pairs_retired", "orphan_instruments_deleted"}


@pytest.fixture
def levels() -> dict[int, Level]:
    return {level.number: level for level in Level.objects.all()}


def test_update_stats_writes_statistics_and_the_json(tmp_path):
    market = make_market()
    reverting = market.pair("Y2USDT", "XUSDT", level=0)
    random_walk = market.pair("RUSDT", "XUSDT", level=0)
    path = tmp_path / "grading.json"
    out = StringIO()

    call_command("update_stats", json_path=path, stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("maintenance: newest_bar=2021-02-")
    # The synthetic data ends in 2021: on the wall clock the feed is stale, so no pair is suspended for it.
    assert "feed_stale=True" in lines[0] and "pairs_suspended=0" in lines[0]
    assert lines[1].startswith("2 pair(s) graded: 1 promoted, 0 demoted (")
    assert lines[2] == f"wrote {path}"
    entry = AuditEntry.objects.get(action="update_stats")
    assert entry.channel == "command" and entry.actor_label.endswith("(manage.py update_stats)")
    assert entry.summary.endswith(": 1 promoted, 0 demoted")

    data = json.loads(path.read_text())
    assert set(data) == {"window_end", "n_pairs", "promoted", "demoted", "pairs", "maintenance"}
    assert data["window_end"] == LAST_BAR.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (data["n_pairs"], data["promoted"], data["demoted"]) == (2, 1, 0)
    assert set(data["maintenance"]) == set(MaintenanceSummary().as_dict()) >= MAINTENANCE_KEYS
    assert data["maintenance"]["newest_bar"] == LAST_BAR.isoformat()
    assert data["maintenance"]["feed_stale"] is True
    assert data["maintenance"]["candles_deleted"] == 0
    entries = {(p["y"], p["x"]): p for p in data["pairs"]}
    assert set(entries) == {("Y2USDT", "XUSDT"), ("RUSDT", "XUSDT")}
    for entry in entries.values():
        assert {"y", "x", "level", "previous_level", "reason", "in_sample", "validation", "live"} == set(entry)
        assert set(entry["in_sample"]) == set(entry["validation"]) == WINDOW_KEYS
        assert entry["live"] is None
    assert entries[("Y2USDT", "XUSDT")]["level"] == 1
    assert entries[("Y2USDT", "XUSDT")]["reason"].startswith("promoted")
    assert entries[("RUSDT", "XUSDT")]["level"] == 0
    stored = PairStatistics.objects.get(pair=reverting, window=PairStatistics.Window.VALIDATION)
    assert entries[("Y2USDT", "XUSDT")]["validation"]["trades"] == stored.trades > 0
    assert PairStatistics.objects.filter(pair__in=[reverting, random_walk]).count() == 4

    # Again: same statistics, no move, the file rewritten.
    out = StringIO()
    call_command("update_stats", json_path=path, stdout=out)
    assert "2 pair(s) graded: 0 promoted, 0 demoted" in out.getvalue()
    assert json.loads(path.read_text())["promoted"] == 0
    assert LevelChange.objects.count() == 1
    assert PairStatistics.objects.count() == 4


def test_update_stats_at_an_end_reads_and_checks_nothing_after_it(tmp_path):
    """Grading history with --end: the backtests end there, and so does the maintenance's view of the data (its
    newest bar is the graded one; the feed, fresh at that moment, is not called stale by today's wall clock)."""
    make_market().pair("Y2USDT", "XUSDT", level=0)
    end = LAST_BAR - timedelta(hours=10)
    path = tmp_path / "grading.json"
    call_command("update_stats", json_path=path, end=end.replace(tzinfo=None), stdout=StringIO())
    data = json.loads(path.read_text())
    assert data["window_end"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert data["maintenance"]["newest_bar"] == end.isoformat()
    assert data["maintenance"]["feed_stale"] is False and data["maintenance"]["stale_symbols"] == []


def test_update_stats_without_pairs_or_json():
    out = StringIO()
    call_command("update_stats", stdout=out)
    assert "0 pair(s) graded: 0 promoted, 0 demoted" in out.getvalue()
    assert "wrote" not in out.getvalue()


def test_update_stats_checks_the_json_path_before_it_stores_anything(tmp_path):
    market = make_market()
    market.pair("Y1USDT", "XUSDT", level=0)
    path = tmp_path / "missing" / "grading.json"
    out = StringIO()

    with pytest.raises(CommandError) as info:
        call_command("update_stats", json_path=path, stdout=out)

    assert str(info.value) == f"--json {path}: the directory {path.parent} does not exist"
    assert out.getvalue() == ""  # neither the maintenance nor the grading ran
    assert not PairStatistics.objects.exists()
    assert not LevelChange.objects.exists()


# --- admin actions ------------------------------------------------------------------------------------------------


def _pair(y: str, x: str, level: Level | None, **kwargs) -> Pair:
    return PairFactory(y_instrument=InstrumentFactory(symbol=f"{y}USDT", base=y),
                       x_instrument=InstrumentFactory(symbol=f"{x}USDT", base=x), level=level, **kwargs)


def _action(client, action: str, *pairs: Pair):
    return client.post(reverse("admin:pairs_pair_changelist"),
                       {"action": action, "_selected_action": [p.pk for p in pairs]}, follow=True)


def test_admin_promote_and_demote_move_one_rung_with_the_user_in_the_audit(staff_client, levels):
    at_0 = _pair("AAA", "BBB", levels[0])
    at_1 = _pair("CCC", "DDD", levels[1], level_locked=True)
    response = _action(staff_client, "promote", at_0, at_1)
    assert response.status_code == 200
    assert "Promoted 2 pair(s)" in response.content.decode()

    for p, before, after in ((at_0, 0, 1), (at_1, 1, 2)):
        p.refresh_from_db()
        assert p.level.number == after
        change = LevelChange.objects.get(pair=p)
        assert (change.from_level.number, change.to_level.number) == (before, after)
        assert change.changed_by == staff_client.user and change.automatic is False
        assert change.reason == "promoted in the admin"
    at_1.refresh_from_db()
    assert at_1.level_locked  # a person's move keeps the lock

    response = _action(staff_client, "demote", at_1)
    assert "Demoted 1 pair(s)" in response.content.decode()
    at_1.refresh_from_db()
    assert at_1.level.number == 1
    latest = LevelChange.objects.filter(pair=at_1).order_by("-pk").first()
    assert (latest.from_level.number, latest.to_level.number) == (2, 1)
    assert latest.changed_by == staff_client.user and latest.reason == "demoted in the admin"
    assert LevelChange.objects.count() == 3


def test_admin_promote_at_the_top_and_demote_at_the_bottom_do_nothing(staff_client, levels):
    top = max(levels)
    at_top = _pair("EEE", "FFF", levels[top])
    at_bottom = _pair("GGG", "HHH", levels[0])

    response = _action(staff_client, "promote", at_top)
    assert "Promoted 0 pair(s)" in response.content.decode()
    response = _action(staff_client, "demote", at_bottom)
    assert "Demoted 0 pair(s)" in response.content.decode()

    at_top.refresh_from_db()
    at_bottom.refresh_from_db()
    assert at_top.level.number == top and at_bottom.level.number == 0
    assert not LevelChange.objects.exists()


def test_admin_promote_puts_a_pair_without_level_on_the_bottom_rung(staff_client, levels):
    off_ladder = _pair("III", "JJJ", None)
    _action(staff_client, "promote", off_ladder)
    off_ladder.refresh_from_db()
    assert off_ladder.level == levels[0]
    change = LevelChange.objects.get(pair=off_ladder)
    assert change.from_level is None and change.to_level == levels[0]


def test_admin_promote_does_not_step_over_a_grading_that_moved_the_pair_meanwhile(staff_client, levels, monkeypatch):
    """The action reads the pair at level 1 and means level 2; a grading demotes it to 0 before the action's write:
    the pair is not moved two rungs up from 0, it stays where the grading put it, and the person is told."""
    from pairs import admin as pairs_admin

    pair = _pair("KKK", "LLL", levels[1])
    real = pairs_admin.pair_set_level

    def grading_first(*, pair, **kwargs):
        Pair.objects.filter(pk=pair.pk).update(level=levels[0])  # the grading's demotion lands first
        return real(pair=pair, **kwargs)

    monkeypatch.setattr(pairs_admin, "pair_set_level", grading_first)
    response = _action(staff_client, "promote", pair)
    pair.refresh_from_db()
    assert pair.level.number == 0
    assert "1 pair(s) changed level meanwhile" in response.content.decode()
    assert not LevelChange.objects.filter(pair=pair).exists()


@pytest.mark.parametrize("end", ["9999-12-31T23:00", "0001-01-01", "2021-02-30"])
def test_update_stats_end_outside_the_calendar_is_an_error_naming_the_option_not_a_traceback(end):
    # 9999-12-31T23:00 was taken, and adding the bar to it for the maintenance's clock raised OverflowError.
    make_market().pair("Y2USDT", "XUSDT", level=0)

    with pytest.raises(CommandError) as info:
        call_command("update_stats", "--end", end, stdout=StringIO())

    assert str(info.value).startswith(f"Error: argument --end: {end!r} is ")
    assert not AuditEntry.objects.filter(action="update_stats").exists()
    assert not PairStatistics.objects.exists()


@pytest.mark.parametrize("days", [1, 365 * 6])
def test_update_stats_end_after_the_newest_bar_is_refused_and_keeps_the_statistics(days):
    # A grading there has no bar to weigh: it replaced every pair's statistics with none (a mistyped year erased
    # them all), and a paper pair was demoted on the missing trades.
    market = make_market()
    pair = market.pair("Y2USDT", "XUSDT", level=0)
    call_command("update_stats", stdout=StringIO())
    pair.refresh_from_db()
    assert pair.level.number == 1
    stored = sorted(PairStatistics.objects.filter(pair=pair).values_list("window", "trades"))
    assert len(stored) == 2

    end = LAST_BAR + timedelta(days=days)
    with pytest.raises(CommandError) as refused:
        call_command("update_stats", end=end.replace(tzinfo=None), stdout=StringIO())

    assert str(refused.value) == (f"--end {end:%Y-%m-%dT%H:%M} is after the newest stored 1h bar of bybit, "
                                  f"{LAST_BAR:%Y-%m-%dT%H:%M} UTC: nothing is graded or stored")
    assert sorted(PairStatistics.objects.filter(pair=pair).values_list("window", "trades")) == stored
    pair.refresh_from_db()
    assert pair.level.number == 1
    assert AuditEntry.objects.filter(action="update_stats").count() == 1
    # At the newest bar itself it grades.
    call_command("update_stats", end=LAST_BAR.replace(tzinfo=None), stdout=StringIO())
