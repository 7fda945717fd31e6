"""Writes of the selection layer."""

from __future__ import annotations

import logging

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from notifications.models import Notification
from notifications.services import notify
from pairs.models import Level, LevelChange, Pair

logger = logging.getLogger(__name__)

ANY_LEVEL = object()  # pair_set_level's default: move the pair from whatever level it is at


@transaction.atomic
def pair_set_level(
    *,
    pair: Pair,
    level: Level | None,
    reason: str,
    changed_by: AbstractBaseUser | None = None,
    lock: bool | None = None,
    force: bool = False,
    from_level_id: int | object | None = ANY_LEVEL,
) -> Pair:
    """Move a pair to ``level`` and audit it; a change by a person may also lock or unlock the level.

    Automation (``changed_by`` empty) never moves a locked pair, the person's choice stands until unlocked,
    unless ``force``: retiring a pair whose contract was delisted overrides any choice. With ``from_level_id`` the
    move is made only if the pair is still at that level under the row's lock: a grading decided on the level it
    read, and a person who moved the pair meanwhile is not overruled by a decision about the old level.
    """
    pair = Pair.objects.select_for_update().get(pk=pair.pk)
    if changed_by is None and pair.level_locked and not force:
        return pair
    if from_level_id is not ANY_LEVEL and pair.level_id != from_level_id:
        logger.info("%s: not moved to %s (%s): its level changed since it was graded", pair, level, reason)
        return pair
    if not reason.strip():
        raise ValueError("A level change needs a reason.")
    old_level_id = pair.level_id
    new_level_id = level.pk if level else None
    lock_changes = lock is not None and lock != pair.level_locked
    if old_level_id == new_level_id and not lock_changes:
        return pair
    if lock is not None:
        pair.level_locked = lock
    if old_level_id != new_level_id:
        pair.level = level
        pair.level_changed_at = timezone.now()
    pair.save(update_fields=["level", "level_locked", "level_changed_at", "updated_at"])
    LevelChange.objects.create(
        pair=pair,
        from_level_id=old_level_id,
        to_level_id=new_level_id,
        reason=reason if not lock_changes else f"{reason} ({'locked' if pair.level_locked else 'unlocked'})",
        changed_by=changed_by,
        automatic=changed_by is None,
    )
    if old_level_id != new_level_id:
        _notify_level_change(pair, old_level_id, level, reason, changed_by)
    return pair


def _level_label(level: Level | None) -> str:
    return f"level {level.number}" if level is not None else "no level (retired)"


def _notify_level_change(pair: Pair, old_level_id: int | None, level: Level | None, reason: str,
                         changed_by: AbstractBaseUser | None) -> None:
    old = Level.objects.filter(pk=old_level_id).first() if old_level_id else None
    who = changed_by.get_username() if changed_by is not None else "the ladder"
    notify(topic="level_change", severity=Notification.Severity.INFO,
           text=f"{pair}: {_level_label(old)} -> {_level_label(level)} by {who} ({reason})")
