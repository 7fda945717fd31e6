"""The pair admin: filtering, level edits and lock actions through the audited service; the audit is read-only."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from core.models import AuditEntry
from pairs.models import Level, LevelChange, Pair, StrategyConfig
from pairs.services.levels import pair_set_level
from tests.factories import InstrumentFactory, PairFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def levels() -> dict[int, Level]:
    return {level.number: level for level in Level.objects.all()}


def _pair(y: str, x: str, level: Level, **kwargs) -> Pair:
    return PairFactory(
        y_instrument=InstrumentFactory(symbol=f"{y}USDT", base=y),
        x_instrument=InstrumentFactory(symbol=f"{x}USDT", base=x),
        level=level,
        **kwargs,
    )


def _change_form_data(pair: Pair, **overrides) -> dict:
    """What the browser posts for the pair's change form, with the inline formsets' management forms."""
    data = {
        "y_instrument": pair.y_instrument_id,
        "x_instrument": pair.x_instrument_id,
        "timeframe": pair.timeframe,
        "status": pair.status,
        "level": pair.level_id or "",
        "hedge_ratio": pair.hedge_ratio,
        "intercept": pair.intercept,
        "pvalue": pair.pvalue,
        "qvalue": pair.qvalue,
        "half_life_bars": pair.half_life_bars,
        "johansen_passed": "unknown",
        "consecutive_failures": pair.consecutive_failures,
        "level_changed_at_0": "",
        "level_changed_at_1": "",
        "last_tested_at_0": "",
        "last_tested_at_1": "",
        "last_passed_at_0": "",
        "last_passed_at_1": "",
        "_save": "Save",
    }
    if pair.level_locked:
        data["level_locked"] = "on"
    for prefix, initial in (("statistics", pair.statistics.count()), ("level_changes", pair.level_changes.count())):
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": initial,
                f"{prefix}-INITIAL_FORMS": initial,
                f"{prefix}-MIN_NUM_FORMS": 0,
                f"{prefix}-MAX_NUM_FORMS": 1000,
            }
        )
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_changelist_loads_and_filters_by_level(staff_client, levels):
    paper = _pair("BTC", "ETH", levels[1])
    live = _pair("SOL", "AVAX", levels[2])

    response = staff_client.get(reverse("admin:pairs_pair_changelist"))
    assert response.status_code == 200
    assert {p.pk for p in response.context["cl"].result_list} == {paper.pk, live.pk}
    assert "BTCUSDT/ETHUSDT" in response.text and "SOLUSDT/AVAXUSDT" in response.text

    response = staff_client.get(reverse("admin:pairs_pair_changelist"), {"level__id__exact": levels[2].pk})
    assert response.status_code == 200
    assert [p.pk for p in response.context["cl"].result_list] == [live.pk]
    assert "SOLUSDT/AVAXUSDT" in response.text
    assert "BTCUSDT/ETHUSDT" not in response.text


def test_change_form_loads(staff_client, levels):
    pair = _pair("BTC", "ETH", levels[1])
    response = staff_client.get(reverse("admin:pairs_pair_change", args=[pair.pk]))
    assert response.status_code == 200
    assert 'name="level"' in response.text


def test_level_edited_in_the_change_form_goes_through_the_audited_service(staff_client, levels):
    pair = _pair("BTC", "ETH", levels[1])

    response = staff_client.post(
        reverse("admin:pairs_pair_change", args=[pair.pk]), _change_form_data(pair, level=levels[2].pk)
    )

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    stored = Pair.objects.get(pk=pair.pk)
    assert stored.level_id == levels[2].pk
    assert stored.level_changed_at is not None
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level_id, change.to_level_id) == (levels[1].pk, levels[2].pk)
    assert change.changed_by == staff_client.user
    assert change.automatic is False
    assert change.reason == "set in the admin"


def test_level_and_lock_edited_together_in_the_change_form(staff_client, levels):
    pair = _pair("BTC", "ETH", levels[1])

    response = staff_client.post(
        reverse("admin:pairs_pair_change", args=[pair.pk]),
        _change_form_data(pair, level=levels[3].pk, level_locked="on"),
    )

    assert response.status_code == 302
    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.level_id, stored.level_locked) == (levels[3].pk, True)
    change = LevelChange.objects.get(pair=pair)
    assert (change.to_level_id, change.reason, change.changed_by) == (
        levels[3].pk,
        "set in the admin (locked)",
        staff_client.user,
    )


def test_a_stored_pairs_status_is_the_maintenances_not_the_forms(staff_client, levels):
    """A pair suspended in the admin was resumed by the next maintenance run without a word (its legs were fresh):
    the status is read-only on a stored pair (README: to take a pair out by hand, lock it at level 0), and a save
    writes no level change."""
    pair = _pair("BTC", "ETH", levels[1])
    url = reverse("admin:pairs_pair_change", args=[pair.pk])
    assert "status" not in staff_client.get(url).context["adminform"].form.fields

    response = staff_client.post(url, _change_form_data(pair, status=Pair.Status.SUSPENDED))

    assert response.status_code == 302
    stored = Pair.objects.get(pk=pair.pk)
    assert stored.status == pair.status
    assert stored.level_id == levels[1].pk
    assert LevelChange.objects.count() == 0


def _opened_form(client, pair: Pair, **overrides) -> dict:
    """What the browser posts for a change form opened now: the fields as shown, with the hidden values the person
    saw (``initial-*``), then the person's edits."""
    html = client.get(reverse("admin:pairs_pair_change", args=[pair.pk])).text
    seen = dict(re.findall(r'<input type="hidden" name="(initial-[a-z_]+)" value="([^"]*)"', html))
    return _change_form_data(pair, **seen) | overrides


def test_a_form_opened_before_the_grading_moved_the_pair_does_not_move_it_back(staff_client, levels):
    """Opened at L2, the grading demotes the pair to L1, the person saves the form unchanged: the level posted (L2, as
    shown) was taken for the person's choice and put the pair back on L2, as 'set in the admin'."""
    pair = _pair("BTC", "ETH", levels[2])
    form = _opened_form(staff_client, pair)
    assert {"initial-level", "initial-level_locked"} <= set(form)
    pair_set_level(pair=pair, level=levels[1], reason="demoted: below L2 thresholds")

    response = staff_client.post(reverse("admin:pairs_pair_change", args=[pair.pk]), form)

    assert response.status_code == 302
    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.level_id, stored.level_locked) == (levels[1].pk, False)
    assert list(LevelChange.objects.values_list("reason", flat=True)) == ["demoted: below L2 thresholds"]


def test_a_level_set_on_a_form_opened_before_the_grading_moved_the_pair_is_not_applied_and_says_so(staff_client,
                                                                                                   levels):
    pair = _pair("BTC", "ETH", levels[2])
    form = _opened_form(staff_client, pair, level=levels[3].pk, level_locked="on")
    pair_set_level(pair=pair, level=levels[1], reason="demoted: below L2 thresholds")

    response = staff_client.post(reverse("admin:pairs_pair_change", args=[pair.pk]), form, follow=True)

    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.level_id, stored.level_locked) == (levels[1].pk, False)
    assert "its level changed to L1" in response.text and "were not applied" in response.text
    assert LevelChange.objects.count() == 1
    assert not AuditEntry.objects.filter(action="set_pair_level").exists()


def test_a_status_the_maintenance_set_after_the_form_was_opened_stays(staff_client, levels):
    pair = _pair("BTC", "ETH", levels[2])
    form = _opened_form(staff_client, pair, level=levels[3].pk)
    Pair.objects.filter(pk=pair.pk).update(status=Pair.Status.SUSPENDED)  # a leg went stale meanwhile

    assert staff_client.post(reverse("admin:pairs_pair_change", args=[pair.pk]), form).status_code == 302

    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.level_id, stored.status) == (levels[3].pk, Pair.Status.SUSPENDED)
    assert AuditEntry.objects.filter(action="set_pair_level", actor=staff_client.user).count() == 1


def test_a_seen_level_no_level_could_have_is_taken_as_the_stored_one(staff_client, levels):
    pair = _pair("BTC", "ETH", levels[2])
    form = _opened_form(staff_client, pair, level=levels[3].pk) | {"initial-level": "999999"}

    assert staff_client.post(reverse("admin:pairs_pair_change", args=[pair.pk]), form).status_code == 302
    assert Pair.objects.get(pk=pair.pk).level_id == levels[3].pk


def test_lock_and_unlock_actions(staff_client, levels):
    first = _pair("BTC", "ETH", levels[1])
    second = _pair("SOL", "AVAX", levels[2])
    untouched = _pair("XRP", "ADA", levels[2])
    url = reverse("admin:pairs_pair_changelist")

    response = staff_client.post(url, {"action": "lock_level", "_selected_action": [first.pk, second.pk]})

    assert response.status_code == 302
    locked = dict(Pair.objects.values_list("pk", "level_locked"))
    assert locked == {first.pk: True, second.pk: True, untouched.pk: False}
    rows = LevelChange.objects.filter(changed_by=staff_client.user, automatic=False)
    assert sorted(rows.values_list("pair_id", "reason")) == [
        (first.pk, "locked in the admin (locked)"),
        (second.pk, "locked in the admin (locked)"),
    ]
    # Locking does not move the level.
    assert dict(Pair.objects.values_list("pk", "level__number")) == {first.pk: 1, second.pk: 2, untouched.pk: 2}

    response = staff_client.post(url, {"action": "unlock_level", "_selected_action": [second.pk]})

    assert response.status_code == 302
    assert dict(Pair.objects.values_list("pk", "level_locked")) == {
        first.pk: True,
        second.pk: False,
        untouched.pk: False,
    }
    assert LevelChange.objects.filter(pair=second).order_by("-id").first().reason == "unlocked in the admin (unlocked)"
    assert LevelChange.objects.count() == 3


def test_level_change_admin_is_read_only(staff_client, levels):
    pair = _pair("BTC", "ETH", levels[1])
    change = LevelChange.objects.create(
        pair=pair, from_level=levels[0], to_level=levels[1], reason="original reason", automatic=True
    )

    assert staff_client.get(reverse("admin:pairs_levelchange_changelist")).status_code == 200
    # Viewing is allowed (no save button); changing, deleting and adding are not.
    view = staff_client.get(reverse("admin:pairs_levelchange_change", args=[change.pk]))
    assert view.status_code == 200
    assert 'name="_save"' not in view.text

    post = staff_client.post(
        reverse("admin:pairs_levelchange_change", args=[change.pk]),
        {"pair": pair.pk, "from_level": levels[2].pk, "to_level": levels[3].pk, "reason": "rewritten"},
    )
    assert post.status_code == 403
    delete_url = reverse("admin:pairs_levelchange_delete", args=[change.pk])
    assert staff_client.get(delete_url).status_code == 403
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert staff_client.get(reverse("admin:pairs_levelchange_add")).status_code == 403

    changelist = staff_client.post(
        reverse("admin:pairs_levelchange_changelist"), {"action": "delete_selected", "_selected_action": [change.pk]}
    )
    assert changelist.status_code in (200, 302)

    stored = LevelChange.objects.get(pk=change.pk)
    assert (stored.reason, stored.from_level_id, stored.to_level_id) == ("original reason", levels[0].pk, levels[1].pk)


def test_a_pair_added_with_a_level_gets_its_level_change_row(staff_client, levels):
    y, x = InstrumentFactory(symbol="BTCUSDT", base="BTC"), InstrumentFactory(symbol="ETHUSDT", base="ETH")
    data = {
        "y_instrument": y.pk, "x_instrument": x.pk, "timeframe": "1h", "status": Pair.Status.ACTIVE,
        "level": levels[3].pk, "level_locked": "on", "hedge_ratio": 0.9, "intercept": 0.0, "pvalue": 0.01,
        "qvalue": 0.05, "half_life_bars": 20.0, "johansen_passed": "unknown", "consecutive_failures": 0,
        "_save": "Save",
    }
    for prefix in ("statistics", "level_changes"):
        data |= {f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0, f"{prefix}-MIN_NUM_FORMS": 0,
                 f"{prefix}-MAX_NUM_FORMS": 1000}
    response = staff_client.post(reverse("admin:pairs_pair_add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    pair = Pair.objects.get(y_instrument=y, x_instrument=x)
    assert pair.level_id == levels[3].pk and pair.level_locked
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level_id, change.to_level_id, change.changed_by) == (None, levels[3].pk, staff_client.user)


def test_a_stored_pairs_legs_timeframe_and_fit_are_read_only_its_level_is_not(staff_client, levels):
    """Changing a leg, the timeframe or the fit of a pair with trades would rewrite what those trades were."""
    pair = _pair("BTC", "ETH", levels[1], hedge_ratio=0.5, timeframe="1h")
    other = InstrumentFactory(symbol="SOLUSDT", base="SOL")
    url = reverse("admin:pairs_pair_change", args=[pair.pk])

    form = staff_client.get(url).context["adminform"].form
    assert {"y_instrument", "x_instrument", "timeframe", "hedge_ratio", "pvalue", "qvalue"}.isdisjoint(form.fields)
    assert {"level", "level_locked"} <= set(form.fields)

    response = staff_client.post(url, _change_form_data(pair, y_instrument=other.pk, x_instrument=other.pk,
                                                        timeframe="4h", hedge_ratio="5", pvalue="0.9",
                                                        level=levels[2].pk))

    assert response.status_code == 302
    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.y_instrument_id, stored.x_instrument_id, stored.timeframe, stored.hedge_ratio) == (
        pair.y_instrument_id, pair.x_instrument_id, "1h", 0.5)
    assert stored.pvalue == pair.pvalue
    assert stored.level_id == levels[2].pk  # the level assignment stays editable


def test_a_new_pair_is_typed_in_whole(staff_client):
    form = staff_client.get(reverse("admin:pairs_pair_add")).context["adminform"].form
    assert {"y_instrument", "x_instrument", "timeframe", "hedge_ratio", "level"} <= set(form.fields)


def test_the_level_form_shows_decimals_as_written(staff_client, levels):
    text = staff_client.get(reverse("admin:pairs_level_change", args=[levels[1].pk])).text
    assert 'name="capital_weight" value="0"' in text and "0E-12" not in text
    text = staff_client.get(reverse("admin:pairs_level_change", args=[levels[2].pk])).text
    assert 'name="capital_weight" value="0.25"' in text


def test_a_real_capital_level_without_live_evidence_is_refused_naming_the_field(staff_client, levels):
    """Unticked on level 2, the grading promoted pairs to real money on the validation backtest alone, which the
    README says never happens."""
    url = reverse("admin:pairs_level_change", args=[levels[2].pk])
    form = staff_client.get(url).context["adminform"].form
    data = {name: ("" if value is None else value) for name, value in form.initial.items()
            if name not in ("requires_live_evidence",) and value is not False}
    data["capital_weight"] = "0.25"

    response = staff_client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["requires_live_evidence"] and "a backtest alone never reaches" in errors[
        "requires_live_evidence"][0]
    assert Level.objects.get(pk=levels[2].pk).requires_live_evidence
    assert staff_client.post(url, data | {"requires_live_evidence": "on", "capital_weight": "0.5"}).status_code == 302
    assert Level.objects.get(pk=levels[2].pk).capital_weight == Decimal("0.5")


def test_a_pair_with_the_same_leg_twice_is_refused_naming_the_legs(staff_client, levels):
    leg = InstrumentFactory(symbol="BTCUSDT", base="BTC")
    response = staff_client.post(reverse("admin:pairs_pair_add"), {
        "y_instrument": leg.pk, "x_instrument": leg.pk, "timeframe": "1h", "status": Pair.Status.CANDIDATE,
        "hedge_ratio": 0.9, "intercept": 0.0, "consecutive_failures": 0, "johansen_passed": "unknown",
        "statistics-TOTAL_FORMS": 0, "statistics-INITIAL_FORMS": 0, "level_changes-TOTAL_FORMS": 0,
        "level_changes-INITIAL_FORMS": 0})
    assert response.status_code == 200
    assert "The y instrument and the x instrument must differ" in response.text
    assert not Pair.objects.exists()


def _form_data(form) -> dict:
    """What the change form posts back as it was rendered (check boxes: "on" when checked, left out otherwise)."""
    values = {name: form[name].value() for name in form.fields}
    return {name: ("on" if value is True else str(value)) for name, value in values.items()
            if value is not None and value is not False}


@pytest.mark.parametrize("timeframe", ["7h", "1H", "hourly"])
def test_a_strategy_configuration_with_an_unknown_timeframe_is_a_form_error(staff_client, timeframe):
    # It was stored, and update_stats (every grading, every command reading the timeframe) then stopped with
    # ValueError: unknown timeframe.
    config = StrategyConfig.current()
    url = reverse("admin:pairs_strategyconfig_change", args=[config.pk])
    data = _form_data(staff_client.get(url).context["adminform"].form)

    response = staff_client.post(url, {**data, "timeframe": timeframe})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["timeframe"] == [
        f"{timeframe!r} is not a timeframe: one of 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 12h, 1d"]
    assert StrategyConfig.current().timeframe == "1h"
    # A known one is taken (with a retention that keeps the 2,500 bars of 4h a screening reads: 417 days).
    assert staff_client.post(url, {**data, "timeframe": "4h", "candle_retention_days": "420"}).status_code == 302
    assert StrategyConfig.current().timeframe == "4h"


def test_a_strategy_configuration_changed_after_its_form_was_opened_is_not_saved_over(staff_client):
    """Two people on the one configuration: the second save put back the entry z the first had just changed."""
    config = StrategyConfig.current()
    url = reverse("admin:pairs_strategyconfig_change", args=[config.pk])
    first = _form_data(staff_client.get(url).context["adminform"].form)
    second = _form_data(staff_client.get(url).context["adminform"].form)

    assert staff_client.post(url, {**first, "entry_z": "2.5"}).status_code == 302
    response = staff_client.post(url, {**second, "stop_z": "5"})

    assert response.status_code == 200
    assert "changed by someone else" in response.context["adminform"].form.non_field_errors()[0]
    stored = StrategyConfig.current()
    assert (stored.entry_z, stored.stop_z) == (2.5, config.stop_z)
