"""Named row locks of the execution layer, one function per lockable queryset, as saleor's ``lock_objects.py``.

Lock order, fixed here and nowhere else: the ExchangeAccount row first, then its heartbeat row (the lease), then
the rows that hang off it (the paper exchange's wallet and positions). Every insert of a row that refers to an
account takes a shared lock on the account row (the foreign key check, InnoDB), so a process holding a paper row
while waiting for the account row could deadlock with one that holds the account row; taking the account row first,
always, makes callers queue instead. Call these inside ``transaction.atomic``: the locks last until the
transaction ends.
"""

from __future__ import annotations

from django.db.models import FilteredRelation, Q

from core.statements import CompiledRead
from execution.models import ExchangeAccount


def lock_account(account: ExchangeAccount) -> None:
    """Lock the account's row: the bot plans a trade under it (halts and limits re-checked with fresh counts)."""
    ExchangeAccount.objects.select_for_update().filter(pk=account.pk).values_list("pk", flat=True).first()


def lock_accounts(account_ids: list[int]) -> None:
    """Lock several accounts' rows, in primary-key order (one statement): the guard acts on their breaches under
    them, so two guard cycles at once (the minute's and a trade close's, or two risk workers) take turns, and the
    second sees the first's halts and events instead of raising them again."""
    list(ExchangeAccount.objects.select_for_update().filter(pk__in=account_ids).order_by("pk")
         .values_list("pk", flat=True))


def lock_paper_books(account: ExchangeAccount, *, symbol: str | None = None) -> list[tuple]:
    """Lock the account's row and its paper wallet and open positions (with ``symbol``'s row even at zero), in that
    order, in one statement; returns the rows as (wallet id, wallet balance, funding settled until, position id,
    symbol, qty, average price), one per position (position columns None when there is none), positions by symbol.

    The statement reads the account row by its primary key and the wallet row by its unique key before the
    positions, so it takes the locks in the documented order (``test_the_account_row_is_locked_before_its_wallet``
    checks it on MariaDB).
    """
    if symbol is None:
        return _PAPER_BOOKS.list(account.pk)
    return _PAPER_BOOKS_WITH_SYMBOL.list(account.pk, symbol)


def _paper_books(account_id: int, symbol: str | None = None):
    held = ~Q(paper_positions__qty=0)
    if symbol is not None:
        held |= Q(paper_positions__symbol=symbol)
    return (
        ExchangeAccount.objects.select_for_update().filter(pk=account_id)
        .annotate(held=FilteredRelation("paper_positions", condition=held))
        .order_by("held__symbol")
        .values_list("paper__id", "paper__wallet_balance", "paper__funding_settled_until", "held__id",
                     "held__symbol", "held__qty", "held__avg_price")
    )  # fmt: skip


# Every paper order and balance reads these (#18: compiled once, core.statements).
_PAPER_BOOKS = CompiledRead(_paper_books)
_PAPER_BOOKS_WITH_SYMBOL = CompiledRead(_paper_books)


def lock_lease(account_id: int, generation: int) -> bool:
    """Lock the account's heartbeat row if its lease is still at ``generation``; False when another lease has
    replaced it. Taken after the account row (the order above) and held to the end of the transaction, so no other
    worker can take the lease over while the caller inserts under it."""
    from execution.models import BotHeartbeat

    return (
        BotHeartbeat.objects.select_for_update().filter(account_id=account_id, lease_generation=generation)
        .values_list("pk", flat=True).first()
    ) is not None
