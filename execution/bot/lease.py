"""The account's lease: the lock that keeps a second bot of the same account from trading.

Taken and renewed by one conditional UPDATE on the account's heartbeat row, it expires on its own when its holder
dies (``LEASE_TTL``), so a crashed worker never blocks the account for longer than that.

Each new lease gets the next **generation**, a fencing token: the holder's writes carry it
(``execution.services.context.Fence``), and a write whose generation is no longer the heartbeat's does nothing. A
worker that stalled past its lease (a long GC pause, a hung network call) while another took over therefore writes
nothing when it wakes: it stops at its first write or send.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.db import IntegrityError
from django.db.models import F, Q
from django.utils import timezone

from core.statements import CompiledRead
from execution.models import BotHeartbeat, ExchangeAccount
from execution.services.context import LEASE_TTL

# A lease renewed this recently (by the last tick's heartbeat) is not renewed again at the start of a tick.
LEASE_KEEP_S = 10.0
_PROCESS_TOKEN = uuid.uuid4().hex[:8]


def default_lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


def lease_acquire(account: ExchangeAccount, owner: str, *, ttl: timedelta = LEASE_TTL) -> str | None:
    """Take or renew the account's lease with one conditional UPDATE. Returns "renewed" (this owner held it),
    "new" (it was free or expired: the caller must reconcile before trading) or None (another live bot has it)."""
    now = timezone.now()
    rows = BotHeartbeat.objects.filter(account=account)
    if rows.filter(lease_owner=owner, lease_expires_at__gt=now).update(lease_expires_at=now + ttl):
        return "renewed"  # the common case: one statement
    try:
        BotHeartbeat.objects.get_or_create(account=account, defaults={"beat_at": now})
    except IntegrityError:  # created by a concurrent bot between the read and the insert
        pass
    if rows.filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)).update(
        lease_owner=owner, lease_expires_at=now + ttl, started_at=now, lease_generation=F("lease_generation") + 1
    ):
        return "new"
    return None


# Every tick reads it (#18: compiled once, core.statements); ``first()`` without an ordering orders by pk.
_HEARTBEAT = CompiledRead(lambda account_id: BotHeartbeat.objects.filter(account_id=account_id).order_by("pk")[:1])


def lease_for_tick(account: ExchangeAccount, owner: str, *, ttl: timedelta = LEASE_TTL
                    ) -> tuple[str | None, BotHeartbeat | None, float]:
    """The lease as lease_acquire answers it, the account's heartbeat row (None without the lease), and the lease's
    age in seconds (the time since it was last renewed).

    A lease this owner renewed less than ``LEASE_KEEP_S`` ago is kept as it is, with no write: nobody else can take it
    before it expires, a tick starts with nearly the whole TTL still ahead, and the tick renews it during a long run
    as it would have (``TradingContext.renew_lease``, counting the age). A live bot ticking every minute renews as
    before; back-to-back ticks (a replay) read one row instead of writing and reading."""
    now = timezone.now()
    heartbeat = next(iter(_HEARTBEAT.list(account.pk)), None)
    if heartbeat is not None and heartbeat.lease_owner == owner and heartbeat.lease_expires_at is not None:
        age = (ttl - (heartbeat.lease_expires_at - now)).total_seconds()
        if 0 <= age < LEASE_KEEP_S:
            return "renewed", heartbeat, age
    lease = lease_acquire(account, owner, ttl=ttl)
    return lease, (BotHeartbeat.objects.get(account=account) if lease is not None else None), 0.0


def lease_release(account: ExchangeAccount, owner: str) -> None:
    BotHeartbeat.objects.filter(account=account, lease_owner=owner).update(lease_expires_at=None)


def leases_release(owner: str) -> int:
    """Give back every lease ``owner`` holds (a worker that stops): the next bot of those accounts takes them at
    once, with the next generation. Returns how many it held."""
    return BotHeartbeat.objects.filter(lease_owner=owner, lease_expires_at__isnull=False).update(
        lease_expires_at=None)
