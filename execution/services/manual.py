"""Requests a person makes of the bots (admin, API, dashboard, Telegram). Each is recorded at once and audited; the
bot acts on it at its next tick, which is sent at once when the broker can take it."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit_record
from execution.models import PairTrade

logger = logging.getLogger(__name__)


class TradeCloseRefused(Exception):
    """A close that nothing would carry out (the account's bot does not run): refused, with the reason, and audited
    as ``refused``."""


def trade_close_refusal(trade: PairTrade) -> str:
    """Why asking to close ``trade`` would be an empty promise, or "" when its bot will act on it."""
    account = trade.account
    if not account.enabled and trade.state in PairTrade.ACTIVE_STATES:
        return (f"account {account.name} is disabled: its bot does not run, so nothing would close trade {trade.pk}; "
                "enable the account (its bot then closes the trade) or close the legs on the exchange")
    return ""


def trade_request_close(*, trade: PairTrade, user: AbstractBaseUser | None = None, now: datetime | None = None,
                        wake_bot: bool = True, channel: str = "admin", actor_label: str = "") -> bool:
    """Ask the account's bot to close a trade (reason "manual"). True if the trade is active and will close (a
    trade still opening closes as soon as it is open); False if it has already finished. Asking twice is harmless.
    The request is stored and audited in one transaction; waking the bot is best effort (its next tick, a minute
    away at most, reads the request anyway). A trade of a disabled account (no bot runs it) raises
    TradeCloseRefused, audited as refused, and nothing is stored."""
    trade.account.refresh_from_db(fields=["enabled"])
    refusal = trade_close_refusal(trade)
    if refusal:
        audit_record(action="refused", channel=channel, actor=user, actor_label=actor_label, target=trade,
                     summary=f"close of trade {trade.pk} refused: {refusal}", details={"trade": trade.pk})
        raise TradeCloseRefused(refusal)
    return _request_close(trade=trade, user=user, now=now, wake_bot=wake_bot, channel=channel,
                          actor_label=actor_label)


def _request_close(*, trade: PairTrade, user, now, wake_bot: bool, channel: str, actor_label: str) -> bool:
    with transaction.atomic():
        asked = PairTrade.objects.filter(
            pk=trade.pk, state__in=PairTrade.ACTIVE_STATES, close_requested_at__isnull=True
        ).update(close_requested_at=now or timezone.now(), close_requested_by=user)
        active = PairTrade.objects.filter(pk=trade.pk, state__in=PairTrade.ACTIVE_STATES).exists()
        if asked:
            audit_record(action="close_trade", channel=channel, actor=user, actor_label=actor_label, target=trade,
                         summary=f"asked to close trade {trade.pk}")
        if active and wake_bot:
            transaction.on_commit(lambda: _wake_in_background(trade.account_id))
    return active


def account_request_flatten(*, account, user: AbstractBaseUser | None = None, now: datetime | None = None,
                            wake_bot: bool = True, channel: str = "admin", actor_label: str = "") -> list[int]:
    """Ask the account's bot to close every active trade of ``account`` (each as ``trade_request_close`` does: reason
    "manual", both legs, audited one by one), audited once more as a flatten. Returns the ids of the trades that
    will close. It does not halt the account: its bot may open new trades at later signals."""
    now = now or timezone.now()
    with transaction.atomic():
        trades = list(PairTrade.objects.filter(account=account, state__in=PairTrade.ACTIVE_STATES).order_by("pk"))
        # Each recorded as trade_request_close does; a disabled account's flatten is recorded too (a halt with
        # flatten takes every account, and the requests wait for the account to be enabled again).
        closing = [t.pk for t in trades if _request_close(trade=t, user=user, now=now, wake_bot=False,
                                                          channel=channel, actor_label=actor_label)]
        audit_record(action="flatten_account", channel=channel, actor=user, actor_label=actor_label, target=account,
                     summary=f"asked to close every open trade of {account.name}: {len(closing)} trade(s)",
                     details={"trades": closing})
        if closing and wake_bot:
            transaction.on_commit(lambda: _wake_in_background(account.pk))
    return closing


def _wake_in_background(account_id: int) -> None:
    """The answer to the person never waits on the broker (a broker that is down or unreachable can take seconds
    to refuse): the wake-up is sent beside the request."""
    threading.Thread(target=wake_bot_of, args=(account_id,), name=f"wake-bot-{account_id}", daemon=True).start()


def wake_bot_of(account_id: int) -> None:
    """Send the account's bot a tick now; if the broker can't take it, the scheduled tick comes within a minute.
    Never waits for a broker that is down (no connection retries) and never fails the caller."""
    from execution.tasks import tick_send

    try:
        tick_send(account_id, retry=False)
    except Exception:
        logger.warning("account %s: the bot could not be woken now (broker unavailable); its next tick acts",
                       account_id, exc_info=True)
