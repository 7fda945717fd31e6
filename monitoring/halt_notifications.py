"""Halts raised and cleared (the guard's, the kill switch, a person's) as notifications.

``risk`` stands below the floors that speak to people and only sends ``halt_raised``/``halt_cleared`` after the
commit (``risk.events``); this module, connected in ``MonitoringConfig.ready``, turns them into notifications. A dedupe
key per halt and event means a signal delivered twice still makes one message.
"""

from __future__ import annotations

import logging

from notifications.models import Notification
from notifications.services import notify
from risk.events import halt_cleared, halt_raised
from risk.models import Halt

logger = logging.getLogger(__name__)


def _scope(halt: Halt) -> str:
    scope = halt.account.name if halt.account_id else "all accounts"
    return f"{scope}, pair {halt.pair}" if halt.pair_id else scope


def halt_raised_text(halt: Halt, by: str = "") -> str:
    who = halt.created_by.get_username() if halt.created_by_id else (by or halt.get_source_display())
    parts = [f"{halt.get_mode_display()}: {_scope(halt)}", f"reason: {halt.reason}", f"by: {who}"]
    if halt.flatten:
        parts.append("open trades are being closed (flatten)")
    if halt.until is not None:
        parts.append(f"until {halt.until:%Y-%m-%d %H:%M} UTC")
    return "\n".join(parts)


def _topic(halt: Halt, raised: bool) -> str:
    if halt.trigger == "kill_switch":
        return "kill_switch" if raised else "kill_switch_released"
    return "halt_raised" if raised else "halt_cleared"


def on_halt_raised(sender, halt: Halt, by: str = "", **kwargs) -> None:
    try:
        notify(topic=_topic(halt, True), text=halt_raised_text(halt, by), severity=Notification.Severity.CRITICAL,
               dedupe_key=f"halt_raised:{halt.pk}")
    except Exception:  # the halt is committed and in force; a lost message must not turn into an error upstream
        logger.exception("could not store the notification of halt %s", halt.pk)


def on_halt_cleared(sender, halt: Halt, by: str = "", **kwargs) -> None:
    who = halt.cleared_by.get_username() if halt.cleared_by_id else (by or _cleared_by_no_one(halt))
    try:
        notify(topic=_topic(halt, False), severity=Notification.Severity.WARNING,
               text=f"cleared: {_scope(halt)}\nwas: {halt.reason}\nby: {who}", dedupe_key=f"halt_cleared:{halt.pk}")
    except Exception:
        logger.exception("could not store the notification of the clearance of halt %s", halt.pk)


def _cleared_by_no_one(halt: Halt) -> str:
    # The bot lifts its own halts (a reconciliation clean again, a stuck trade settled); every other halt cleared by
    # no one is a latch that ended.
    if halt.source == Halt.Source.BOT:
        return f"{halt.get_source_display()}, once what stopped it was resolved"
    return "nobody (latch ended or the guard)"


def connect() -> None:
    halt_raised.connect(on_halt_raised, sender=Halt, dispatch_uid="monitoring.halt_raised_notify")
    halt_cleared.connect(on_halt_cleared, sender=Halt, dispatch_uid="monitoring.halt_cleared_notify")
