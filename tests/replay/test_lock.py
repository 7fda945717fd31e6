"""The replay lock on its own: taken when free or expired, refused while held, renewed and released by its owner."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from replay.errors import ReplayError
from replay.lock import (
    REPLAY_LOCK_TTL,
    replay_lock_acquire,
    replay_lock_owner,
    replay_lock_release,
    replay_lock_renew,
)
from replay.models import ReplayLock

pytestmark = pytest.mark.django_db


def test_owners_are_unique_per_run_even_in_one_process():
    first, second = replay_lock_owner(), replay_lock_owner()
    assert first != second
    assert first.rsplit(":", 1)[0] == second.rsplit(":", 1)[0]  # same host and pid


def test_taken_refused_while_held_and_free_again_once_released():
    replay_lock_acquire(owner="a", description="first")
    lock = ReplayLock.objects.get()
    assert (lock.name, lock.owner, lock.description) == ("replay", "a", "first")
    assert lock.expires_at - lock.acquired_at == REPLAY_LOCK_TTL

    with pytest.raises(ReplayError, match=r"^another replay is running on this database \(first; process a\)"):
        replay_lock_acquire(owner="b", description="second")

    replay_lock_release(owner="b")  # not b's: nothing happens
    assert ReplayLock.objects.get().expires_at is not None
    replay_lock_release(owner="a")
    replay_lock_acquire(owner="b", description="second")
    assert ReplayLock.objects.get().owner == "b"


def test_renewal_pushes_the_expiry_and_fails_once_another_took_over():
    replay_lock_acquire(owner="a", description="first", ttl=timedelta(seconds=1))
    ReplayLock.objects.update(expires_at=timezone.now() - timedelta(seconds=5))  # expired, nobody took it yet

    replay_lock_renew(owner="a")  # still a's: renewed

    assert ReplayLock.objects.get().expires_at > timezone.now() + REPLAY_LOCK_TTL - timedelta(minutes=1)
    ReplayLock.objects.update(expires_at=timezone.now() - timedelta(seconds=5))
    replay_lock_acquire(owner="b", description="second")  # taken over
    with pytest.raises(ReplayError, match=r"^this replay \(a\) lost its lock"):
        replay_lock_renew(owner="a")
