"""Reads of the execution layer."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum, Value
from django.db.models.functions import TruncDate

from core.secrets import decrypt_secret, register_secret
from execution.models import ExchangeAccount, Fill, Order, PairTrade


class CredentialsMissing(LookupError):
    pass


@dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # never print the values, even in a traceback's locals
        return "Credentials(api_key=***, api_secret=***)"


def account_credentials(*, account: ExchangeAccount) -> Credentials:
    """The account's key and secret: from the named environment variables first, else the encrypted copies."""
    if account.api_key_env or account.api_secret_env:
        prefix = settings.STATARB_CREDENTIAL_ENV_PREFIX
        for name in (account.api_key_env, account.api_secret_env):
            if not name.startswith(prefix):  # checked again here: a row edited outside the admin
                raise CredentialsMissing(f"Account {account.name!r}: the credential variable {name!r} must start "
                                         f"with {prefix!r}; not reading it.")
        api_key = os.environ.get(account.api_key_env, "")
        api_secret = os.environ.get(account.api_secret_env, "")
        if not api_key or not api_secret:
            raise CredentialsMissing(
                f"Account {account.name!r}: environment variables {account.api_key_env!r} and "
                f"{account.api_secret_env!r} must both be set."
            )
        register_secret(api_key)
        register_secret(api_secret)
        return Credentials(api_key, api_secret)
    if account.has_stored_credentials:
        return Credentials(decrypt_secret(account.api_key_encrypted), decrypt_secret(account.api_secret_encrypted))
    raise CredentialsMissing(f"Account {account.name!r} has no credentials (name env variables or store them).")


def credentials_source(account: ExchangeAccount) -> str:
    """How the account's credentials are provided, for display; never the values."""
    if account.api_key_env or account.api_secret_env:
        return f"env: {account.api_key_env or '?'} / {account.api_secret_env or '?'}"
    if account.has_stored_credentials:
        return "stored encrypted"
    return "none"


@dataclass(frozen=True)
class LiveTradeResult:
    """One finished trade of a pair, as the ladder weighs live evidence: its realised PnL (net of fees and funding)
    over the gross notional of its opening fills, and how long it was held."""

    pair_id: int
    trade_id: int
    pnl: Decimal
    gross_entry_notional: Decimal
    opened_at: datetime | None
    closed_at: datetime | None

    @property
    def return_on_notional(self) -> float:
        return float(self.pnl) / float(self.gross_entry_notional)


def live_trade_results(*, pair_ids: Iterable[int], closed_by: datetime | None = None
                       ) -> dict[int, list[LiveTradeResult]]:
    """Each pair's finished paper/demo/real trades with a result, oldest close first, closed at or before
    ``closed_by`` when given (a grading of the past sees only what had finished by then); trades whose opening fills
    have no notional (nothing was held) are left out. Two queries."""
    pair_ids = list(pair_ids)
    finished = PairTrade.objects.filter(pair_id__in=pair_ids, state__in=PairTrade.FINAL_STATES,
                                        realised_pnl__isnull=False)
    if closed_by is not None:
        finished = finished.filter(closed_at__lte=closed_by)
    trades = (
        finished
        .order_by("closed_at", "pk")
        .values_list("pk", "pair_id", "realised_pnl", "opened_at", "closed_at")
    )
    notional = dict(
        Fill.objects.filter(order__trade__pair_id__in=pair_ids, order__action=Order.Action.OPEN)
        .values_list("order__trade_id")
        .annotate(total=Sum(F("qty") * F("price")))
        .values_list("order__trade_id", "total")
    )
    by_pair: dict[int, list[LiveTradeResult]] = {}
    for trade_id, pair_id, pnl, opened_at, closed_at in trades:
        gross = notional.get(trade_id) or Decimal(0)
        if gross <= 0:
            continue
        by_pair.setdefault(pair_id, []).append(LiveTradeResult(pair_id, trade_id, pnl, gross, opened_at, closed_at))
    return by_pair


def trade_day_sums(trades: QuerySet) -> list[dict]:
    """``trades`` (finished, with a result) summed per UTC day of closing, in one grouped query: trades, wins, losses,
    gross profit and loss, realised PnL, fees, funding (exact decimals; None where nothing was summed), the holding
    time (a timedelta) and how many trades have an opening time. The daily totals and the reporting reads share it."""
    positive, negative = Q(realised_pnl__gt=0), Q(realised_pnl__lt=0)
    held = ExpressionWrapper(F("closed_at") - F("opened_at"), output_field=DurationField())
    return list(
        trades.annotate(day=TruncDate("closed_at", tzinfo=UTC)).values("day")
        .annotate(trades=Count("id"), wins=Count("id", filter=positive), losses=Count("id", filter=negative),
                  gross_profit=Sum("realised_pnl", filter=positive), gross_loss=Sum("realised_pnl", filter=negative),
                  pnl=Sum("realised_pnl"), fees=Sum("fees"), funding=Sum("funding"), held=Sum(held),
                  held_trades=Count("opened_at"))
        .order_by("day")
    )


def trade_intervals(trades: QuerySet, *, origin: datetime, closing: str = "closed_at") -> list[tuple[int, int]]:
    """The holding intervals of ``trades`` (which have an opening time), from ``opened_at`` to ``closing`` (a field
    or an annotation), as microseconds from ``origin``, computed by the database and read with a plain cursor: no
    datetime is built per trade."""
    start = Value(origin)
    offsets = trades.annotate(o=ExpressionWrapper(F("opened_at") - start, output_field=DurationField()),
                              c=ExpressionWrapper(F(closing) - start, output_field=DurationField())) \
        .order_by().values_list("o", "c")
    try:
        sql, params = offsets.query.sql_with_params()
    except EmptyResultSet:  # e.g. no account in scope: no SQL to run
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
