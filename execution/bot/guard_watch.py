"""The bot's check that the guard is running: an account the scheduled guard cycle has not checked for
``STATARB_GUARD_MAX_AGE_S`` (wall clock) opens no new trade. With beat, the risk worker or every guard cycle down,
no loss limit is enforced and no halt raised, so entries stop until the guard checks the account again; closes,
stop-losses and repairs go on. Only live ticks ask (``bot_tick_live``): a replay runs the guard itself every bar."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from execution.models import ExchangeAccount
from notifications.models import Notification
from notifications.services import notify
from risk.models import AccountGuardState, GuardEvent
from risk.services import guard_event_record

# When this process (a worker's, whose children fork from it) started: after the whole stack was down, the guard's
# stamp is as old as the stop, and the bots' first ticks may come before the guard's first cycle. The alarm counts
# the guard's silence from here, as from an account's change: only a guard silent while the bots run is told.
PROCESS_STARTED = timezone.now()


def configured_guard_max_age() -> timedelta | None:
    """The setting as a duration; None when the check is off (0)."""
    seconds = int(getattr(settings, "STATARB_GUARD_MAX_AGE_S", 0) or 0)
    return timedelta(seconds=seconds) if seconds > 0 else None


def unguarded_refusal(account: ExchangeAccount, max_age: timedelta | None, *, now: datetime) -> str:
    """Why ``account`` may open no trade for want of a running guard ("" when it may). ``now`` is the tick's
    market time (for the event); the age is measured on the wall clock, which the guard's cycles are stamped in.
    Told (critical, once an hour per account) unless the account was enabled or changed, or this process started,
    within ``max_age``: a new account, one enabled again (the guard checks enabled accounts only, so its stamp is as
    old as its pause) and a stack started again wait for the guard's next cycle without an alarm."""
    if max_age is None:
        return ""
    wall = timezone.now()
    checked = (AccountGuardState.objects.filter(account=account).values_list("live_checked_at", flat=True)
               .first())  # fmt: skip
    if checked is not None and wall - checked <= max_age:
        return ""
    seen = "never" if checked is None else f"last at {checked:%Y-%m-%d %H:%M:%S} UTC"
    refusal = (f"no new trades: the guard has not checked this account within {max_age.total_seconds():g} s "
               f"({seen}), so its loss limits are not enforced; is beat or the risk worker down?")
    # The stamp is older than max_age too (or missing): the guard has been silent since the later of these.
    if max(account.updated_at, PROCESS_STARTED) < wall - max_age:
        told = notify(topic="guard_silent", severity=Notification.Severity.CRITICAL,
                      text=f"[{account.name}] {refusal}", dedupe_key=f"guard_silent:{account.pk}:{wall:%Y%m%d%H}")
        if told is not None:  # one event with each message, not one a tick
            guard_event_record(account=account, kind="guard_silent", severity=GuardEvent.Severity.CRITICAL,
                               message=refusal, at=now)
    return refusal
