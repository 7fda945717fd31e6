"""The replay lock: one replay at a time per database, refused at once with who holds it, and never stuck.

A lease row (``ReplayLock``) rather than a database lock, because it behaves the same on SQLite and MariaDB, survives
the replay's own transactions (one per bar) and tells the next replay who holds it and since when. Taken by one
conditional UPDATE (free, or expired), renewed by the holder every ``REPLAY_LOCK_RENEW_EVERY`` while it runs,
cleared at its end (also after an error or Ctrl-C). A replay that was killed can't clear it: its lease expires
``REPLAY_LOCK_TTL`` after its last renewal and the next replay takes it over.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

from django.db import DatabaseError, IntegrityError
from django.db.models import Q
from django.utils import timezone

from core.formatting import iso
from replay.errors import ReplayError
from replay.models import ReplayLock

logger = logging.getLogger(__name__)

REPLAY_LOCK_NAME = "replay"
# Long enough that no single bar (a selection step screens the whole universe) outlasts it between two renewals,
# short enough that a killed replay doesn't block the next one for long.
REPLAY_LOCK_TTL = timedelta(minutes=10)
# Renewed after the first bar that ends this long after the last renewal: one UPDATE a minute, not one a bar.
REPLAY_LOCK_RENEW_EVERY = timedelta(minutes=1)


def replay_lock_owner() -> str:
    """A name for this run: host, process and a token of its own (two replays of one process are two owners)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def replay_lock_acquire(*, owner: str, description: str, ttl: timedelta = REPLAY_LOCK_TTL) -> None:
    """Take the lock for ``owner``; ReplayError naming the replay that holds it, and since when, if it is held.

    An expired lease (its holder was killed) is taken over, with a warning in the log."""
    now = timezone.now()
    try:
        ReplayLock.objects.get_or_create(name=REPLAY_LOCK_NAME)
    except IntegrityError:  # created by a replay starting at the same moment
        pass
    rows = ReplayLock.objects.filter(name=REPLAY_LOCK_NAME)
    before = rows.first()
    free = Q(expires_at__isnull=True) | Q(expires_at__lte=now)
    if rows.filter(free).update(owner=owner, description=description, acquired_at=now, expires_at=now + ttl):
        if before is not None and before.expires_at is not None:
            logger.warning(
                "replay lock taken over from %s (%s): it expired at %s without being released",
                before.owner, before.description, iso(before.expires_at),
            )  # fmt: skip
        return
    holder = rows.get()
    raise ReplayError(
        f"another replay is running on this database ({holder.description}; process {holder.owner}) since "
        f"{iso(holder.acquired_at)}: wait for it to end, or stop it. Its lock expires at {iso(holder.expires_at)} "
        "unless that replay renews it, so one that was killed blocks no longer than that"
    )


def replay_lock_renew(*, owner: str, ttl: timedelta = REPLAY_LOCK_TTL) -> None:
    """Push the holder's expiry ``ttl`` ahead; ReplayError when the lease is no longer ``owner``'s (it expired
    during a bar longer than ``ttl`` and another replay took it over): this replay must stop writing."""
    now = timezone.now()
    if not ReplayLock.objects.filter(name=REPLAY_LOCK_NAME, owner=owner).update(expires_at=now + ttl):
        raise ReplayError(
            f"this replay ({owner}) lost its lock: it went longer than {ttl} without renewing it, and another "
            "replay took it over. Stopped; the bars replayed so far are stored"
        )


def replay_lock_release(*, owner: str) -> None:
    """Free the lock if ``owner`` still holds it (the owner and description stay, as the last holder's).

    Called on the way out of a replay, also after an error: a database that can't take the UPDATE now (the error
    may be that very database) is logged rather than raised over the error that ended the replay; the lease then
    expires on its own."""
    try:
        ReplayLock.objects.filter(name=REPLAY_LOCK_NAME, owner=owner).update(expires_at=None)
    except DatabaseError:
        logger.exception("replay lock of %s not released: it expires on its own within %s", owner, REPLAY_LOCK_TTL)
