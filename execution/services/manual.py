"""Requests a person makes of the bots (admin and API). The bot acts on them at its next tick, which is sent at once."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from execution.models import PairTrade


def trade_request_close(*, trade: PairTrade, user: AbstractBaseUser | None = None, now: datetime | None = None,
                        wake_bot: bool = True) -> bool:
    """Ask the account's bot to close a trade (reason "manual"). True if the trade is active and will close (a
    trade still opening closes as soon as it is open); False if it has already finished. Asking twice is harmless."""
    with transaction.atomic():
        PairTrade.objects.filter(pk=trade.pk, state__in=PairTrade.ACTIVE_STATES, close_requested_at__isnull=True
                                 ).update(close_requested_at=now or timezone.now(), close_requested_by=user)
        active = PairTrade.objects.filter(pk=trade.pk, state__in=PairTrade.ACTIVE_STATES).exists()
        if active and wake_bot:
            transaction.on_commit(lambda: _wake(trade.account_id))
    return active


def _wake(account_id: int) -> None:
    from execution.tasks import run_bot

    run_bot.apply_async((account_id,), queue=f"execution.account.{account_id}")
