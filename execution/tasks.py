"""Execution tasks: thin wrappers that call services."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task
from django.conf import settings

from execution.bot.tick import bot_tick_live
from execution.models import ExchangeAccount
from execution.services.signals import signals_update
from pairs.models import StrategyConfig


# Each (pair, bar) is signalled once and the rule state advances only on new bars: safe to run twice.
@shared_task(acks_late=True, soft_time_limit=10 * 60, time_limit=12 * 60)
def compute_signals() -> dict:
    """Advance every active pair's spread rule to the newest closed bar and write its signals (the pipelines of
    ``statarb_site.pipelines`` wake the bots after it)."""
    return asdict(signals_update(config=StrategyConfig.current()))


# A tick is safe to run twice (lease, persisted state machine, idempotent client order ids), so a worker that dies
# mid-tick may hand it to another: acks_late.
@shared_task(bind=True, acks_late=True, soft_time_limit=4 * 60, time_limit=5 * 60)
def run_bot(self, account_id: int) -> dict:
    """One tick of one account's bot. Runs on the account's own queue (execution.account.<id>)."""
    account = ExchangeAccount.objects.select_related("level").get(pk=account_id)
    return bot_tick_live(account, task_id=self.request.id or "").as_dict()


@shared_task(acks_late=True)
def dispatch_bots() -> list[int]:
    """Send one tick to the queue of every enabled account."""
    accounts = list(ExchangeAccount.objects.filter(enabled=True).values_list("pk", flat=True))
    for account_id in accounts:
        tick_send(account_id)
    return accounts


def tick_send(account_id: int, **options) -> str:
    """Send one tick to the account's queue. It expires: a tick still queued after ``STATARB_BOT_TICK_EXPIRES_S``
    is discarded by the worker instead of run late (another comes every minute; each acts on the time it runs at,
    so the queued ones only repeated the same work back to back after an outage)."""
    return run_bot.apply_async((account_id,), queue=f"execution.account.{account_id}",
                               expires=settings.STATARB_BOT_TICK_EXPIRES_S, **options).id
