"""Where a notification goes, from the settings (read at call time, so tests and the admin's settings apply at once).

``TELEGRAM_CHAT_IDS="-1001234567890:info,424242:critical"``: a chat receives its severity and above (no suffix:
info). ``NOTIFY_EMAIL_TO="ops@example.com:warning"``: the same for e-mail recipients. ``NOTIFY_LOG_SEVERITY``: the
lowest severity written to the log channel (``off`` for none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings

from notifications.models import SEVERITY_RANK, Delivery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    channel: str
    target: str
    min_severity: str

    def accepts(self, severity: str) -> bool:
        return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[self.min_severity]


def parse_targets(spec: str, *, setting: str, strict: bool = True) -> list[tuple[str, str]]:
    """``"a:info,b:critical,c"`` -> [(a, info), (b, critical), (c, info)]. A bad severity or an empty destination is
    a configuration error: raised when ``strict`` (the system check, ``manage.py check``), else logged, and a bad
    severity read as info (the destination then gets everything): ``notify`` runs inside the transactions of the
    events it reports, so a typo must neither stop trading nor silently drop alerts."""
    out = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        target, colon, severity = item.rpartition(":")
        if not colon:
            target, severity = item, "info"
        elif severity not in SEVERITY_RANK:
            _misconfigured(f"{setting}: unknown severity in {item!r} (one of {', '.join(SEVERITY_RANK)})", strict)
            severity = "info"
        if not target.strip():
            _misconfigured(f"{setting}: empty destination in {item!r}", strict)
            continue
        out.append((target.strip(), severity))
    return out


def _misconfigured(problem: str, strict: bool) -> None:
    if strict:
        raise ValueError(problem)
    logger.error("notification routing: %s (fix the setting; manage.py check names it)", problem)


def _log_severity(*, strict: bool) -> str:
    severity = getattr(settings, "NOTIFY_LOG_SEVERITY", "info")
    if severity != "off" and severity not in SEVERITY_RANK:
        _misconfigured(f"NOTIFY_LOG_SEVERITY: {severity!r} is none of off, {', '.join(SEVERITY_RANK)}", strict)
        return "info"
    return severity


def routing_problems() -> list[str]:
    """What is wrong in the routing settings (the system check reports each as an error)."""
    problems = []
    checks = [(lambda: parse_targets(telegram_chat_ids(), setting="TELEGRAM_CHAT_IDS")),
              (lambda: parse_targets(getattr(settings, "NOTIFY_EMAIL_TO", ""), setting="NOTIFY_EMAIL_TO")),
              (lambda: _log_severity(strict=True))]
    for check in checks:
        try:
            check()
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def telegram_chat_ids() -> str:
    return getattr(settings, "TELEGRAM_CHAT_IDS", "") or getattr(settings, "TELEGRAM_CHAT_ID", "")


def routes() -> list[Route]:
    """Every configured destination. Telegram needs a bot token as well as chats."""
    found: list[Route] = []
    if getattr(settings, "TELEGRAM_BOT_TOKEN", ""):
        for chat, severity in parse_targets(telegram_chat_ids(), setting="TELEGRAM_CHAT_IDS", strict=False):
            found.append(Route(Delivery.Channel.TELEGRAM, chat, severity))
    for address, severity in parse_targets(getattr(settings, "NOTIFY_EMAIL_TO", ""), setting="NOTIFY_EMAIL_TO",
                                           strict=False):
        found.append(Route(Delivery.Channel.EMAIL, address, severity))
    log_severity = _log_severity(strict=False)
    if log_severity != "off":
        found.append(Route(Delivery.Channel.LOG, "statarb.notifications", log_severity))
    return found


def routes_for(severity: str) -> list[Route]:
    return [route for route in routes() if route.accepts(severity)]
