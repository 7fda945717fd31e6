"""Writing ``DailyTradeTotals``: each (account, UTC day) row recomputed from the trades of that day, never incremented,
so a refresh is idempotent and a row can't drift from the trades (which rows a write touches:
``execution.daily_totals``). ``daily_totals_refresh`` runs inside the transaction that writes the trades;
``daily_totals_rebuild`` recomputes every row of one account or of all (``manage.py rebuild_daily_totals`` and the
migration that filled the table).

A row holds what the KPIs need from the trades closed that day (``execution.selectors.trade_day_sums``) and the parts
of the day during which at least one of the account's finished trades was open, merged (``open_spans``, offsets in
microseconds from the day's start; ``open_us`` their length).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.db.models import Max, Min

from core.row_updates import row_update
from execution.daily_totals import FINAL_STATES, Key
from execution.selectors import trade_day_sums, trade_intervals

DAY = timedelta(days=1)
US_PER_DAY = 86_400_000_000
ROW_FIELDS = ("trades", "wins", "losses", "gross_profit", "gross_loss", "pnl", "fees", "funding", "held_us",
              "held_trades", "open_us", "open_spans")
FEW_ROWS = 4  # rows updated one statement each; more go in one bulk_update
CREATE_RETRIES = 3  # another transaction may create a row this one found missing; each retry finds more rows


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _models(trades_model=None, totals_model=None):
    """The current models, or those a migration hands over (its historical models)."""
    if trades_model is None or totals_model is None:
        from execution.models import DailyTradeTotals, PairTrade

        return PairTrade, DailyTradeTotals
    return trades_model, totals_model


def _counted(trades_model, using: str | None):
    return trades_model._base_manager.using(using).filter(state__in=FINAL_STATES, realised_pnl__isnull=False,
                                                          closed_at__isnull=False)


def _runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted days as runs of consecutive days (first, last)."""
    runs: list[list[date]] = []
    for day in sorted(set(days)):
        if runs and day == runs[-1][1] + DAY:
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return [(first, last) for first, last in runs]


def _day_spans(intervals: list[tuple[int, int]], first: date, n_days: int) -> dict[date, list[list[int]]]:
    """The union of ``intervals`` (microseconds from ``first``'s start), clipped to the ``n_days`` days, cut per day."""
    spans: dict[date, list[list[int]]] = defaultdict(list)
    merged: list[list[int]] = []
    for opened, closed in sorted((max(int(a), 0), min(int(b), n_days * US_PER_DAY)) for a, b in intervals):
        if closed <= opened:
            continue
        if merged and opened <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], closed)
        else:
            merged.append([opened, closed])
    for opened, closed in merged:
        while opened < closed:
            n = opened // US_PER_DAY
            stop = min(closed, (n + 1) * US_PER_DAY)
            spans[first + timedelta(days=n)].append([opened - n * US_PER_DAY, stop - n * US_PER_DAY])
            opened = stop
    return spans


def _compute(trades_model, account_id: int, first: date, last: date, using: str | None) -> dict[date, dict]:
    """The rows of days ``first`` to ``last`` of one account, from its trades (days with nothing left out)."""
    lo, hi = day_start(first), day_start(last) + DAY
    counted = _counted(trades_model, using).filter(account_id=account_id)
    rows: dict[date, dict] = {}
    for r in trade_day_sums(counted.filter(closed_at__gte=lo, closed_at__lt=hi)):
        rows[r["day"]] = {
            "trades": r["trades"], "wins": r["wins"], "losses": r["losses"],
            "gross_profit": r["gross_profit"] or Decimal(0), "gross_loss": r["gross_loss"] or Decimal(0),
            "pnl": r["pnl"], "fees": r["fees"], "funding": r["funding"],
            "held_us": r["held"] // timedelta(microseconds=1) if r["held"] is not None else 0,
            "held_trades": r["held_trades"], "open_us": 0, "open_spans": [],
        }
    held = counted.filter(opened_at__isnull=False, opened_at__lt=hi, closed_at__gt=lo)
    n_days = (last - first).days + 1
    for day, spans in _day_spans(trade_intervals(held, origin=lo), first, n_days).items():
        row = rows.setdefault(day, {"trades": 0, "wins": 0, "losses": 0, "gross_profit": Decimal(0),
                                    "gross_loss": Decimal(0), "pnl": Decimal(0), "fees": Decimal(0),
                                    "funding": Decimal(0), "held_us": 0, "held_trades": 0})
        row["open_spans"] = spans
        row["open_us"] = sum(b - a for a, b in spans)
    return rows


def _write(totals_model, account_id: int, days: list[date], existing: dict, computed: dict[date, dict],
           using: str | None) -> None:
    """Make the rows of ``days`` (``existing``: those there, locked) hold ``computed``: update, create or delete.
    IntegrityError when another transaction created one of the missing rows meanwhile."""
    rows = totals_model._base_manager.using(using)
    to_update, to_create = [], []
    for day in days:
        values = computed.get(day)
        if values is None:
            continue
        row = existing.get(day) or totals_model(account_id=account_id, day=day)
        for name in ROW_FIELDS:
            setattr(row, name, values[name])
        (to_update if row.pk else to_create).append(row)
    gone = [row.pk for day, row in existing.items() if day not in computed]
    if gone:
        rows.filter(pk__in=gone).delete()
    if len(to_update) <= FEW_ROWS and using in (None, DEFAULT_DB_ALIAS):
        # A trade's write touches a day or two: one plain UPDATE a row, its statement built once
        # (``core.row_updates``), costs less than compiling the CASE of a bulk_update each time (#18).
        to_update = [row for row in to_update if row_update(row, ROW_FIELDS) is None]
    if to_update:
        rows.bulk_update(to_update, ROW_FIELDS, batch_size=1000)
    if to_create:
        with transaction.atomic(using=using):
            rows.bulk_create(to_create, batch_size=1000)


def _refresh_account(trades_model, totals_model, account_id: int, days: list[date], using: str | None) -> None:
    for attempt in range(CREATE_RETRIES + 1):
        # Lock the rows that exist before reading the trades: a refresh of the same day waits for this one to
        # commit, then reads its trades too (READ COMMITTED).
        existing = {row.day: row for row in totals_model._base_manager.using(using).select_for_update()
                    .filter(account_id=account_id, day__in=days)}
        computed: dict[date, dict] = {}
        for first, last in _runs(days):
            computed.update(_compute(trades_model, account_id, first, last, using))
        try:
            _write(totals_model, account_id, days, existing, computed, using)
            return
        except IntegrityError:
            if attempt == CREATE_RETRIES:
                raise


def daily_totals_refresh(*, keys: Iterable[Key], using: str | None = None, trades_model=None,
                         totals_model=None) -> None:
    """Recompute the rows of ``keys`` ((account id, UTC day) pairs) from the trades, in the caller's transaction."""
    by_account: dict[int, set[date]] = defaultdict(set)
    for account_id, day in keys:
        by_account[account_id].add(day)
    if not by_account:
        return
    trades_model, totals_model = _models(trades_model, totals_model)
    with transaction.atomic(using=using, savepoint=False):
        for account_id in sorted(by_account):  # one order for every transaction: no deadlock between two refreshes
            _refresh_account(trades_model, totals_model, account_id, sorted(by_account[account_id]), using)


def daily_totals_rebuild(*, account_ids: Iterable[int] | None = None, using: str | None = None, trades_model=None,
                         totals_model=None) -> int:
    """Recompute every row of the accounts of ``account_ids`` (default: every account with trades or rows) from
    their trades, deleting the rest. Returns the rows written."""
    trades_model, totals_model = _models(trades_model, totals_model)
    counted = _counted(trades_model, using)
    rows = totals_model._base_manager.using(using)
    if account_ids is None:
        account_ids = set(counted.values_list("account_id", flat=True).distinct()) \
            | set(rows.values_list("account_id", flat=True).distinct())
    written = 0
    with transaction.atomic(using=using):
        for account_id in sorted(set(account_ids)):
            span = counted.filter(account_id=account_id).aggregate(opened=Min("opened_at"), closed=Min("closed_at"),
                                                                   last=Max("closed_at"))
            rows.filter(account_id=account_id).delete()
            if span["last"] is None:
                continue
            first = min(m for m in (span["opened"], span["closed"]) if m is not None).astimezone(UTC).date()
            computed = _compute(trades_model, account_id, first, span["last"].astimezone(UTC).date(), using)
            rows.bulk_create([totals_model(account_id=account_id, day=day, **values)
                              for day, values in sorted(computed.items())], batch_size=1000)
            written += len(computed)
    return written
