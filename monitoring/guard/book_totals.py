"""The guard's totals of finished trades per account (everything realised, today's sums and counts) and losing
streaks, in one hand-built statement.

A cycle runs this every minute live and at every bar of a replay; built by the ORM (conditional sums, a correlated
subquery) it cost far more to compile than to run (#18). The statement is the same for every cycle but for the
number of accounts, so it is built once per count. Values come back through the backend's own converters for the
columns' types, as the ORM would hand them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from django.db import connection
from django.db.models import DateTimeField, DecimalField, Value

from execution.models import PairTrade

ZERO = Decimal(0)


@dataclass
class TradeTotals:
    """One account's finished trades at a cycle's clock: ``realised`` over every one up to ``now``; the day's sums
    and counts over those closed (opened) since the day's start; the losing streak since the last winning trade
    (how many, when the last one closed)."""

    realised: Decimal = ZERO
    day_realised: Decimal = ZERO
    day_fees: Decimal = ZERO
    day_funding: Decimal = ZERO
    day_closed: int = 0
    day_opened: int = 0
    losing_streak: int = 0
    last_loss_at: datetime | None = None


@lru_cache(maxsize=16)
def _statement(n_accounts: int, vendor: str) -> str:
    """The statement for ``n_accounts`` accounts (``vendor`` keys the cache by backend: tests switch databases).

    Finished: a final state with a realised PnL, closed up to the clock. Today: finished, closed since the day's
    start. A loss of the streak: a final state, a PnL <= 0, a closing time after the account's newest winning one
    (or no win yet)."""
    table = connection.ops.quote_name(PairTrade._meta.db_table)
    ids = ", ".join(["%s"] * n_accounts)
    final = ", ".join(["%s"] * len(PairTrade.FINAL_STATES))
    finished = f"t.state IN ({final}) AND t.realised_pnl IS NOT NULL AND t.closed_at <= %s"
    today = f"{finished} AND t.closed_at >= %s"
    loss = (f"t.state IN ({final}) AND t.realised_pnl <= 0 AND t.closed_at IS NOT NULL "
            "AND (w.last_win IS NULL OR t.closed_at > w.last_win)")
    # S608 (noqa below): the table name is ours, every value is a parameter.
    return (
        f"SELECT t.account_id, COALESCE(SUM(CASE WHEN {finished} THEN t.realised_pnl END), 0), "  # noqa: S608
        f"COALESCE(SUM(CASE WHEN {today} THEN t.realised_pnl END), 0), "
        f"COALESCE(SUM(CASE WHEN {today} THEN t.fees END), 0), "
        f"COALESCE(SUM(CASE WHEN {today} THEN t.funding END), 0), "
        f"COUNT(CASE WHEN {today} THEN t.id END), "
        "COUNT(CASE WHEN t.opened_at >= %s AND t.opened_at <= %s THEN t.id END), "
        f"COUNT(CASE WHEN {loss} THEN t.id END), MAX(CASE WHEN {loss} THEN t.closed_at END) "
        f"FROM {table} t LEFT JOIN (SELECT account_id, MAX(closed_at) AS last_win FROM {table} "
        f"WHERE account_id IN ({ids}) AND state IN ({final}) AND realised_pnl > 0 GROUP BY account_id) w "
        f"ON w.account_id = t.account_id WHERE t.account_id IN ({ids}) GROUP BY t.account_id"
    )


def trade_totals(ids: list[int], *, start: datetime, now: datetime) -> dict[int, TradeTotals]:
    """``TradeTotals`` of each of ``ids`` that has trades, at ``now``, the day starting at ``start``."""
    if not ids:
        return {}
    ops = connection.ops
    at, since = ops.adapt_datetimefield_value(now), ops.adapt_datetimefield_value(start)
    final = list(PairTrade.FINAL_STATES)
    finished, today = [*final, at], [*final, at, since]
    params = [*finished, *today, *today, *today, *today, since, at, *final, *final, *ids, *final, *ids]
    money = _converters(Value(None, output_field=DecimalField(max_digits=32, decimal_places=12)))
    moment = _converters(Value(None, output_field=DateTimeField()))
    totals = {}
    with connection.cursor() as cursor:
        cursor.execute(_statement(len(ids), connection.vendor), params)
        for account_id, realised, day_realised, fees, funding, closed, opened, streak, last_loss in cursor.fetchall():
            totals[account_id] = TradeTotals(
                realised=money(realised), day_realised=money(day_realised), day_fees=money(fees),
                day_funding=money(funding), day_closed=closed, day_opened=opened, losing_streak=streak,
                last_loss_at=moment(last_loss),
            )
    return totals


def _converters(expression):
    """The backend's conversion of a raw value of ``expression``'s type (what the ORM applies to its results)."""
    converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)

    def convert(value):
        for converter in converters:
            value = converter(value, expression, connection)
        return value

    return convert
