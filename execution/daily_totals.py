"""Keeping ``DailyTradeTotals`` exact: which (account, UTC day) rows a trade is in, and the trades' QuerySet, whose
writes refresh those rows in their own transaction. The rows are recomputed from the trades of the day (never
incremented), so a refresh is idempotent and the totals can't drift (``execution.services.daily_totals``).

A trade is in the rows of every UTC day from its opening to its closing: its closing day sums it, and each of those
days holds the time it was open (exposure). Only finished trades with a result count (closed, failed or unwound, with
a realised PnL and a closing time), as in the KPIs.

Raw SQL bypasses this; whoever writes trades that way runs ``manage.py rebuild_daily_totals`` after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta

from django.db import models, transaction

from core.statements import CompiledRead

FINAL_STATES = ("closed", "failed", "unwound")  # PairTrade.FINAL_STATES (a test keeps them equal)
# The fields whose change moves a trade in or out of a day's totals, or changes them.
TOTALS_FIELDS = frozenset({"account", "account_id", "state", "opened_at", "closed_at", "realised_pnl", "fees",
                           "funding"})

Key = tuple[int, date]


def days_between(opened_at: datetime | None, closed_at: datetime) -> list[date]:
    """The UTC days from the opening (the closing when there is none, or a later one) to the closing."""
    last = closed_at.astimezone(UTC).date()
    first = min(opened_at, closed_at).astimezone(UTC).date() if opened_at is not None else last
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def counted(state: str, realised_pnl, closed_at: datetime | None) -> bool:
    return state in FINAL_STATES and realised_pnl is not None and closed_at is not None


def trade_days(trade) -> set[Key]:
    """The (account, day) rows ``trade`` is in, as its attributes stand."""
    if not counted(trade.state, trade.realised_pnl, trade.closed_at) or trade.account_id is None:
        return set()
    return {(trade.account_id, day) for day in days_between(trade.opened_at, trade.closed_at)}


def stored_days(queryset: models.QuerySet) -> set[Key]:
    """The rows the counted trades of ``queryset`` are in, as the database holds them (one query)."""
    rows = queryset.filter(state__in=FINAL_STATES, realised_pnl__isnull=False, closed_at__isnull=False) \
        .order_by().values_list("account_id", "opened_at", "closed_at")
    return {(account_id, day) for account_id, opened, closed in rows for day in days_between(opened, closed)}


ROW = ("pk", "account_id", "state", "realised_pnl", "opened_at", "closed_at")
ROW_ATTNAMES = frozenset(ROW[1:])


def _row_days(rows) -> set[Key]:
    """The rows of ``rows`` (tuples in the order of ``ROW``) are in."""
    return {(account_id, day) for _, account_id, state, pnl, opened, closed in rows
            if account_id is not None and counted(state, pnl, closed) for day in days_between(opened, closed)}


def _updated(row: tuple, values: dict) -> tuple:
    named = dict(zip(ROW, row, strict=True))
    for name, value in values.items():
        name = "account_id" if name == "account" else name
        if name in named:
            named[name] = getattr(value, "pk", value)
    return tuple(named[name] for name in ROW)


def known_days(trade, using: str | None = None) -> set[Key]:
    """The rows a trade is in as stored: remembered when it was read, else read (a trade built in memory)."""
    if hasattr(trade, "_stored_days"):
        return trade._stored_days
    if trade.pk is None or trade._state.adding:
        return set()
    return stored_days(type(trade)._base_manager.using(using).filter(pk=trade.pk))


def refresh(keys: Iterable[Key], using: str | None = None) -> None:
    from execution.services.daily_totals import daily_totals_refresh

    daily_totals_refresh(keys=keys, using=using)


def save_keeping_totals(trade, save, *args, **kwargs) -> None:
    """``save`` (Model.save) of ``trade``, then the rows of the days it was and is in refreshed, in one transaction."""
    using = kwargs.get("using")
    fields = kwargs.get("update_fields")
    if fields is not None and not TOTALS_FIELDS & set(fields):  # none of the totals' fields written
        save(*args, **kwargs)
        return
    keys = known_days(trade, using) | trade_days(trade)
    if not keys:  # in no total before or after
        save(*args, **kwargs)
    else:
        with transaction.atomic(using=using, savepoint=False):
            save(*args, **kwargs)
            refresh(keys, using=using)
    trade._stored_days = trade_days(trade)


def delete_keeping_totals(trade, delete, *args, **kwargs):
    using = kwargs.get("using")
    keys = known_days(trade, using) | trade_days(trade)
    with transaction.atomic(using=using, savepoint=False):
        result = delete(*args, **kwargs)
        refresh(keys, using=using)
    return result


def update_keeping_totals(pk: int, values: dict, write: Callable[[], int]) -> int:
    """``write()`` (an update of the trade ``pk`` with ``values``, by attribute name, that returns the rows it
    matched) and the rows of the days the trade was and is in refreshed, in one transaction: what
    ``PairTradeQuerySet.update`` does, for a caller that writes the row its own way (the bot's fenced writes)."""
    if not TOTALS_FIELDS & set(values):
        return write()
    with transaction.atomic(savepoint=False):
        return _write_keeping_totals(_ROW_OF.list(pk), values, write, _trade_model()._base_manager)


def _write_keeping_totals(rows: list[tuple], values: dict, write: Callable[[], int], trades,
                          using: str | None = None) -> int:
    """``write()`` of ``values`` to the trades ``rows`` (read before it, in the order of ``ROW``), then the rows
    of the days they were and are in refreshed; ``trades`` reads them back after an expression (F(), Case...)."""
    count = write()
    if count:  # nothing written (a lost lease): nothing to refresh
        if any(hasattr(value, "resolve_expression") for value in values.values()):
            after = stored_days(trades.filter(pk__in=[row[0] for row in rows]))
        else:  # the values written, known here: no read
            after = _row_days([_updated(row, values) for row in rows])
        refresh(_row_days(rows) | after, using=using)
    return count


def _trade_model():
    from execution.models import PairTrade  # the models import this module

    return PairTrade


def _row_of(pk: int):
    return _trade_model()._base_manager.filter(pk=pk).values_list(*ROW)


_ROW_OF = CompiledRead(_row_of)


class PairTradeQuerySet(models.QuerySet):
    """Bulk writes of trades refresh the daily totals of the days they touch, in the same transaction
    (``bulk_update`` writes through ``update``)."""

    def update(self, **values) -> int:
        if not TOTALS_FIELDS & set(values):
            return super().update(**values)
        update = super().update
        with transaction.atomic(using=self.db, savepoint=False):
            return _write_keeping_totals(list(self.order_by().values_list(*ROW)), values, lambda: update(**values),
                                         self.model._base_manager.using(self.db), using=self.db)

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        keys = set().union(*(trade_days(o) for o in objs)) if objs else set()
        if not keys:
            return super().bulk_create(objs, *args, **kwargs)
        with transaction.atomic(using=self.db, savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            refresh(keys, using=self.db)
        return created

    def delete(self):
        with transaction.atomic(using=self.db, savepoint=False):
            keys = stored_days(self)
            result = super().delete()
            refresh(keys, using=self.db)
        return result

    delete.alters_data = True
    delete.queryset_only = True
