"""Where a notification goes, from the settings (read at call time, so tests and the admin's settings apply at once).

``TELEGRAM_CHAT_IDS="-1001234567890:info,424242:critical"``: a chat receives its severity and above (no suffix:
info). ``NOTIFY_EMAIL_TO="ops@example.com:warning"``: the same for e-mail recipients. ``NOTIFY_LOG_SEVERITY``: the
lowest severity written to the log channel (``off`` for none).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from notifications.models import SEVERITY_RANK, Delivery


@dataclass(frozen=True)
class Route:
    channel: str
    target: str
    min_severity: str

    def accepts(self, severity: str) -> bool:
        return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[self.min_severity]


def parse_targets(spec: str, *, setting: str) -> list[tuple[str, str]]:
    """``"a:info,b:critical,c"`` -> [(a, info), (b, critical), (c, info)]; a bad severity is a configuration error
    (raised, so a typo never silently drops alerts)."""
    out = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        target, colon, severity = item.rpartition(":")
        if not colon:
            target, severity = item, "info"
        elif severity not in SEVERITY_RANK:
            raise ValueError(f"{setting}: unknown severity in {item!r} (one of {', '.join(SEVERITY_RANK)})")
        if not target.strip():
            raise ValueError(f"{setting}: empty destination in {item!r}")
        out.append((target.strip(), severity))
    return out


def telegram_chat_ids() -> str:
    return getattr(settings, "TELEGRAM_CHAT_IDS", "") or getattr(settings, "TELEGRAM_CHAT_ID", "")


def routes() -> list[Route]:
    """Every configured destination. Telegram needs a bot token as well as chats."""
    found: list[Route] = []
    if getattr(settings, "TELEGRAM_BOT_TOKEN", ""):
        for chat, severity in parse_targets(telegram_chat_ids(), setting="TELEGRAM_CHAT_IDS"):
            found.append(Route(Delivery.Channel.TELEGRAM, chat, severity))
    for address, severity in parse_targets(getattr(settings, "NOTIFY_EMAIL_TO", ""), setting="NOTIFY_EMAIL_TO"):
        found.append(Route(Delivery.Channel.EMAIL, address, severity))
    log_severity = getattr(settings, "NOTIFY_LOG_SEVERITY", "info")
    if log_severity != "off":
        if log_severity not in SEVERITY_RANK:
            raise ValueError(f"NOTIFY_LOG_SEVERITY: {log_severity!r} is none of off, {', '.join(SEVERITY_RANK)}")
        found.append(Route(Delivery.Channel.LOG, "statarb.notifications", log_severity))
    return found


def routes_for(severity: str) -> list[Route]:
    return [route for route in routes() if route.accepts(severity)]
