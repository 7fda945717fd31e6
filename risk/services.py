"""Writes of the risk policy: halts, the kill switch and guard events.

Every raise and every clear sends ``halt_raised`` / ``halt_cleared`` (``risk.events``) after its transaction
commits; the monitoring layer, which may speak to people, turns them into notifications.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from core.audit import audit_record
from core.market_clock import market_clock
from core.statements import CompiledRead
from risk.events import halt_cleared, halt_raised
from risk.models import AccountGuardState, DailyPnlSnapshot, GuardEvent, Halt

if TYPE_CHECKING:
    from execution.models import ExchangeAccount
    from pairs.models import Pair


@transaction.atomic
def halt_raise(
    *, account: ExchangeAccount | None, source: str, reason: str, flatten: bool = False,
    created_by: AbstractBaseUser | None = None, mode: str = Halt.Mode.REDUCE, trigger: str = "",
    until: datetime | None = None, pair: Pair | None = None, now: datetime | None = None,
    breach_multiple: float | None = None, by_label: str = "",
) -> Halt:
    """Stop new trades (mode reduce) or all trading (mode halt) of an account, all accounts (``account`` None) or
    one pair of an account. An identical halt in force is reused: it is made stricter (flatten, halt, a later
    latch) where the new one asks for more, never looser. ``now``: the engine's clock (``core.market_clock``) unless
    given, so a halt and its latch are on the clock the guard and the bots judge them by. ``breach_multiple``: how
    many times its limit the guard's breach was (what a person who clears it accepts)."""
    now = now or market_clock().now()
    existing = (
        Halt.objects.select_for_update()
        .filter(Q(until__isnull=True) | Q(until__gt=now), account=account, pair=pair, source=source, reason=reason,
                trigger=trigger, cleared_at__isnull=True)
        .first()
    )
    if existing:
        changed = []
        if flatten and not existing.flatten:
            existing.flatten = True
            changed.append("flatten")
        if mode == Halt.Mode.HALT and existing.mode != Halt.Mode.HALT:
            existing.mode = Halt.Mode.HALT
            changed.append("mode")
        if existing.until is not None and (until is None or until > existing.until):
            existing.until = until
            changed.append("until")
        if changed:
            existing.save(update_fields=changed)
        return existing
    halt = Halt.objects.create(account=account, pair=pair, source=source, reason=reason[:500], flatten=flatten,
                               created_by=created_by, mode=mode, trigger=trigger, until=until, created_at=now,
                               breach_multiple=breach_multiple)
    # ``by_label``: who raised it when no user did (a command's operator), for the notification.
    transaction.on_commit(lambda: halt_raised.send(sender=Halt, halt=halt, by=by_label))
    return halt


def guard_event_record(
    *, account: ExchangeAccount | None, kind: str, message: str, severity: str = GuardEvent.Severity.WARNING,
    details: dict | None = None, at: datetime | None = None,
) -> GuardEvent:
    return GuardEvent.objects.create(account=account, kind=kind, severity=severity, message=message[:1000],
                                     details=details or {}, created_at=at or timezone.now())


@transaction.atomic
def halts_clear(*, halts: QuerySet[Halt], cleared_by: AbstractBaseUser | None, now: datetime | None = None,
                by_label: str = "") -> int:
    """Clear the given halts that are not cleared yet; returns how many. ``by_label``: who did when no user did (a
    command's operator), for the notification."""
    cleared = list(halts.select_for_update().filter(cleared_at__isnull=True))
    if not cleared:
        return 0
    at = now or market_clock().now()  # the clock the guard compares a latch's end with
    Halt.objects.filter(pk__in=[h.pk for h in cleared]).update(cleared_at=at, cleared_by=cleared_by)
    for halt in cleared:
        halt.cleared_at, halt.cleared_by = at, cleared_by
    transaction.on_commit(lambda: [halt_cleared.send(sender=Halt, halt=h, by=by_label) for h in cleared])
    return len(cleared)


@transaction.atomic
def kill_switch_engage(*, account: ExchangeAccount | None, flatten: bool, reason: str,
                       user: AbstractBaseUser | None, source: str = Halt.Source.MANUAL, channel: str = "admin",
                       actor_label: str = "") -> Halt:
    """Halt one account or (``account`` None) every account: no entries, no signal exits but stop-losses; with
    ``flatten`` every open trade is closed by its bot, both legs, reduce-only. Holds until a person resumes. Audited."""
    if not reason.strip():
        raise ValueError("a kill switch needs a reason")
    halt = halt_raise(account=account, source=source, reason=f"kill switch: {reason.strip()}", flatten=flatten,
                      created_by=user if user is not None and user.pk else None, mode=Halt.Mode.HALT,
                      trigger="kill_switch", by_label=actor_label)
    scope = account.name if account is not None else "all accounts"
    audit_record(action="kill_switch", channel=channel, actor=user, actor_label=actor_label, target=halt,
                 summary=f"kill switch on {scope}" + (", flattening" if flatten else "") + f": {reason.strip()}")
    return halt


@transaction.atomic
def kill_switch_release(*, account: ExchangeAccount | None, user: AbstractBaseUser | None,
                        source: str = Halt.Source.MANUAL, channel: str = "admin", actor_label: str = "") -> int:
    """Clear the halts a person raised on ``account`` (kill switches and manual halts; ``account`` None: the
    system-wide ones). Halts the guard raised stay: each is cleared on its own, once its cause is understood."""
    halts = Halt.objects.filter(account=account).filter(
        Q(trigger="kill_switch") | Q(source__in=[Halt.Source.MANUAL, Halt.Source.TELEGRAM]))
    count = halts_clear(halts=halts, cleared_by=user if user is not None and user.pk else None,
                        by_label=actor_label)
    scope = account.name if account is not None else "all accounts"
    audit_record(action="resume", channel=channel, actor=user, actor_label=actor_label,
                 summary=f"{scope} resumed: {count} halt(s) cleared", details={"source": source})
    return count


# Every guard cycle reads this (#18: compiled once, core.statements).
_EXPIRED = CompiledRead(lambda now: Halt.objects.filter(cleared_at__isnull=True, until__isnull=False, until__lte=now))


def expired_halts_clear(*, now: datetime) -> list[Halt]:
    """Mark the halts whose latch ended as cleared (by nobody), so the history says when trading resumed."""
    halts = _EXPIRED.list(now)
    if halts:
        with transaction.atomic():
            # Those still not cleared once locked: another guard cycle may have cleared (and audited) them meanwhile.
            halts = list(Halt.objects.select_for_update().filter(pk__in=[h.pk for h in halts], cleared_at__isnull=True))
            halts_clear(halts=Halt.objects.filter(pk__in=[h.pk for h in halts]), cleared_by=None, now=now)
            for halt in halts:
                audit_record(action="halt_expired", channel="system", actor_label="guard", target=halt,
                             summary=f"latch ended: {halt.reason}")
    return halts


def guard_baselines_move_with_capital(*, account, delta, today) -> None:
    """An account's capital changed by ``delta`` (a deposit, a new allocation): its equity (capital + PnL) moves by
    it without any trade, so the guard's baselines move with it, or the change would be read as the day's profit or
    loss, a drawdown or a new peak, and an unexplained balance change. Today's snapshot's start, end and peak move;
    without one yet today, one is written from the newest earlier day's end (earlier days stay as they were). The
    guard's next cycle rewrites the rest of today's row."""
    if not delta:
        return
    with transaction.atomic():
        AccountGuardState.objects.filter(account=account).update(equity=F("equity") + delta,
                                                                 peak_equity=F("peak_equity") + delta)
        moved = DailyPnlSnapshot.objects.filter(account=account, date=today).update(
            starting_equity=F("starting_equity") + delta, ending_equity=F("ending_equity") + delta,
            peak_equity=F("peak_equity") + delta)
        if moved:
            return
        before = DailyPnlSnapshot.objects.filter(account=account, date__lt=today).order_by("-date").first()
        if before is not None:
            start = before.ending_equity + delta
            DailyPnlSnapshot.objects.create(account=account, date=today, starting_equity=start,
                                            ending_equity=start, peak_equity=before.peak_equity + delta)
