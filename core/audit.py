"""Writing the audit trail (``core.models.AuditEntry``): one call per change, in the caller's transaction."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models

from core.models import AuditEntry
from core.secrets import redact


def audit_record(*, action: str, channel: str, summary: str, actor: AbstractBaseUser | None = None,
                 actor_label: str = "", target: models.Model | None = None, details: dict | None = None
                 ) -> AuditEntry:
    """Record one change asked for. ``actor_label`` names who it was when there is no user (a command's operator,
    a Telegram user); known secrets never reach the trail."""
    label = actor_label or (actor.get_username() if actor is not None else "system")
    return AuditEntry.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        actor_label=label[:150],
        channel=channel,
        action=action[:64],
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        summary=redact(summary)[:500],
        details=details or {},
    )
