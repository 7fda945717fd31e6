"""The kill switch and its release, for the admin, the API, the commands and Telegram: the halt is written (and
audited) by ``risk.services``; here the bots of the accounts concerned are woken at once to act on it."""

from __future__ import annotations

import threading

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from execution.models import ExchangeAccount
from execution.services.manual import wake_bot_of
from risk.models import Halt
from risk.services import kill_switch_engage, kill_switch_release


def accounts_halt(*, account: ExchangeAccount | None, flatten: bool, reason: str, user: AbstractBaseUser | None,
                  channel: str, actor_label: str = "", source: str = Halt.Source.MANUAL) -> Halt:
    """Halt ``account`` (None: every account), optionally flattening; their bots tick at once."""
    with transaction.atomic():
        halt = kill_switch_engage(account=account, flatten=flatten, reason=reason, user=user, source=source,
                                  channel=channel, actor_label=actor_label)
        ids = [account.pk] if account is not None else list(
            ExchangeAccount.objects.filter(enabled=True).values_list("pk", flat=True))
        transaction.on_commit(lambda: _wake(ids))
    return halt


def accounts_resume(*, account: ExchangeAccount | None, user: AbstractBaseUser | None, channel: str,
                    actor_label: str = "", source: str = Halt.Source.MANUAL) -> int:
    """Clear the kill switches and manual halts of ``account`` (None: the system-wide ones)."""
    return kill_switch_release(account=account, user=user, source=source, channel=channel, actor_label=actor_label)


def _wake(account_ids: list[int]) -> None:
    # The broker may be down: waking is best effort and never delays the answer (each bot ticks within a minute).
    def run():
        for account_id in account_ids:
            wake_bot_of(account_id)

    threading.Thread(target=run, name="wake-bots", daemon=True).start()
