"""pair_set_level: every level move is audited, automation respects a person's lock."""

from __future__ import annotations

import pytest

from pairs.models import Level, LevelChange, Pair
from pairs.services.levels import pair_set_level
from tests.factories import PairFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def levels() -> dict[int, Level]:
    return {level.number: level for level in Level.objects.all()}


@pytest.fixture
def person(django_user_model):
    return django_user_model.objects.create_user(username="risk-officer", password="a-long-test-password")


def test_change_by_a_person_is_written_with_its_audit_row(levels, person):
    pair = PairFactory(level=levels[1])

    result = pair_set_level(pair=pair, level=levels[2], reason="paper results confirmed", changed_by=person)

    stored = Pair.objects.get(pk=pair.pk)
    assert stored.level_id == levels[2].pk
    assert result.level_id == levels[2].pk
    assert stored.level_changed_at is not None
    assert stored.level_locked is False
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level_id, change.to_level_id) == (levels[1].pk, levels[2].pk)
    assert change.reason == "paper results confirmed"
    assert change.changed_by == person
    assert change.automatic is False
    assert change.actor == "risk-officer"


def test_automatic_change_is_marked_automatic_with_no_user(levels):
    pair = PairFactory(level=levels[1])

    pair_set_level(pair=pair, level=levels[0], reason="out-of-sample profit factor 0.8 < 1.2")

    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level_id, change.to_level_id) == (levels[1].pk, levels[0].pk)
    assert change.changed_by is None
    assert change.automatic is True
    assert change.actor == "system"
    assert Pair.objects.get(pk=pair.pk).level_id == levels[0].pk


def test_change_to_no_level_and_back_from_none(levels):
    pair = PairFactory(level=None)
    pair_set_level(pair=pair, level=levels[0], reason="passed the screen")
    pair_set_level(pair=pair, level=None, reason="delisted leg")
    rows = list(LevelChange.objects.filter(pair=pair).order_by("id").values_list("from_level_id", "to_level_id"))
    assert rows == [(None, levels[0].pk), (levels[0].pk, None)]
    assert Pair.objects.get(pk=pair.pk).level is None


def test_automation_does_not_move_a_locked_pair(levels):
    pair = PairFactory(level=levels[2], level_locked=True)

    result = pair_set_level(pair=pair, level=levels[0], reason="drawdown over the level's limit")

    assert result.level_id == levels[2].pk
    stored = Pair.objects.get(pk=pair.pk)
    assert stored.level_id == levels[2].pk
    assert stored.level_locked is True
    assert stored.level_changed_at is None
    assert LevelChange.objects.count() == 0


def test_a_person_can_move_a_locked_pair(levels, person):
    pair = PairFactory(level=levels[2], level_locked=True)

    pair_set_level(pair=pair, level=levels[3], reason="manual promotion", changed_by=person)

    stored = Pair.objects.get(pk=pair.pk)
    assert stored.level_id == levels[3].pk
    assert stored.level_locked is True
    assert LevelChange.objects.get(pair=pair).reason == "manual promotion"


@pytest.mark.parametrize("reason", ["", "   "])
def test_empty_reason_raises_and_writes_nothing(levels, person, reason):
    pair = PairFactory(level=levels[1])

    with pytest.raises(ValueError, match="reason"):
        pair_set_level(pair=pair, level=levels[2], reason=reason, changed_by=person)

    assert Pair.objects.get(pk=pair.pk).level_id == levels[1].pk
    assert Pair.objects.get(pk=pair.pk).level_changed_at is None
    assert LevelChange.objects.count() == 0


def test_no_change_writes_no_audit_row(levels, person):
    pair = PairFactory(level=levels[1])
    pair_set_level(pair=pair, level=levels[1], reason="same level", changed_by=person)
    pair_set_level(pair=pair, level=levels[1], reason="same level", changed_by=person, lock=False)
    assert LevelChange.objects.count() == 0


def test_lock_only_change_is_audited(levels, person):
    pair = PairFactory(level=levels[2])

    pair_set_level(pair=pair, level=levels[2], reason="hold at small live", changed_by=person, lock=True)

    stored = Pair.objects.get(pk=pair.pk)
    assert stored.level_locked is True
    assert stored.level_id == levels[2].pk
    assert stored.level_changed_at is None  # the level itself did not move
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level_id, change.to_level_id) == (levels[2].pk, levels[2].pk)
    assert change.reason == "hold at small live (locked)"
    assert change.changed_by == person
    assert change.automatic is False

    pair_set_level(pair=pair, level=levels[2], reason="let automation decide", changed_by=person, lock=False)

    assert Pair.objects.get(pk=pair.pk).level_locked is False
    reasons = list(LevelChange.objects.filter(pair=pair).order_by("id").values_list("reason", flat=True))
    assert reasons == ["hold at small live (locked)", "let automation decide (unlocked)"]


def test_level_and_lock_changed_together_write_one_row(levels, person):
    pair = PairFactory(level=levels[1])

    pair_set_level(pair=pair, level=levels[3], reason="fast track", changed_by=person, lock=True)

    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.level_id, stored.level_locked) == (levels[3].pk, True)
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level_id, change.to_level_id) == (levels[1].pk, levels[3].pk)
    assert change.reason == "fast track (locked)"


def test_a_level_move_is_notified_and_a_lock_alone_is_not(levels, person):
    from notifications.models import Notification

    pair = PairFactory(level=levels[1])
    pair_set_level(pair=pair, level=levels[2], reason="paper results confirmed", changed_by=person)
    pair_set_level(pair=pair, level=None, reason="delisted", force=True)
    pair_set_level(pair=pair, level=None, reason="keep it off", changed_by=person, lock=True)

    texts = list(Notification.objects.filter(topic="level_change").order_by("pk").values_list("text", flat=True))
    assert texts == [
        f"{pair}: level 1 -> level 2 by risk-officer (paper results confirmed)",
        f"{pair}: level 2 -> no level (retired) by the ladder (delisted)",
    ]
