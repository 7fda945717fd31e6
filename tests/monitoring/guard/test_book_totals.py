"""The guard's hand-built totals and losing streaks (``monitoring.guard.book_totals``) give what the ORM statements
they replaced gave (kept here as the reference), on trades of every kind around the day's start and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, DecimalField, F, Max, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from execution.models import PairTrade
from monitoring.guard.book import day_start
from monitoring.guard.book_totals import TradeTotals, trade_totals
from tests.factories import ExchangeAccountFactory, PairFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
Money = DecimalField(max_digits=32, decimal_places=12)
State = PairTrade.State


def reference(ids: list[int], start: datetime, now: datetime) -> dict[int, TradeTotals]:
    """The ORM statements of the guard before #18's replay work."""
    final = Q(state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False, closed_at__lte=now)
    today = final & Q(closed_at__gte=start)
    zero = Value(Decimal(0), output_field=Money)
    rows = {row["account_id"]: row for row in PairTrade.objects.filter(account_id__in=ids).values("account_id")
            .annotate(realised=Coalesce(Sum("realised_pnl", filter=final), zero),
                      day_realised=Coalesce(Sum("realised_pnl", filter=today), zero),
                      day_fees=Coalesce(Sum("fees", filter=today), zero),
                      day_funding=Coalesce(Sum("funding", filter=today), zero),
                      day_closed=Count("pk", filter=today),
                      day_opened=Count("pk", filter=Q(opened_at__gte=start, opened_at__lte=now))).order_by()}
    last_win = PairTrade.objects.filter(account_id=OuterRef("account_id"), state__in=PairTrade.FINAL_STATES,
                                        realised_pnl__gt=0).order_by("-closed_at").values("closed_at")[:1]
    streaks = {row["account_id"]: (row["n"], row["last"]) for row in (
        PairTrade.objects.filter(account_id__in=ids, state__in=PairTrade.FINAL_STATES, realised_pnl__lte=0,
                                 closed_at__isnull=False)
        .annotate(last_win=Subquery(last_win)).filter(Q(last_win__isnull=True) | Q(closed_at__gt=F("last_win")))
        .values("account_id").annotate(n=Count("pk"), last=Max("closed_at")).order_by())}
    return {
        account_id: TradeTotals(realised=row["realised"], day_realised=row["day_realised"], day_fees=row["day_fees"],
                                day_funding=row["day_funding"], day_closed=row["day_closed"],
                                day_opened=row["day_opened"], losing_streak=streaks.get(account_id, (0, None))[0],
                                last_loss_at=streaks.get(account_id, (0, None))[1])
        for account_id, row in rows.items()
    }


def trade(account, state, pnl, *, closed: timedelta | None, opened: timedelta | None = None, fees="1.25",
          funding="-0.5"):
    return PairTradeFactory(account=account, pair=PairFactory(), state=state,
                            realised_pnl=None if pnl is None else Decimal(pnl), fees=Decimal(fees),
                            funding=Decimal(funding), opened_at=None if opened is None else NOW - opened,
                            closed_at=None if closed is None else NOW - closed)


def test_totals_and_streaks_equal_the_orm_statements_they_replaced():
    hour = timedelta(hours=1)
    streaky, winner, idle, fresh = (ExchangeAccountFactory() for _ in range(4))
    # streaky: a win two days ago, then losses (one at zero, one yesterday, two today), one after the clock
    trade(streaky, State.CLOSED, "12.5", closed=48 * hour, opened=50 * hour)
    trade(streaky, State.CLOSED, "-3.333333333333", closed=30 * hour, opened=31 * hour)
    trade(streaky, State.UNWOUND, "0", closed=20 * hour, opened=20 * hour)
    trade(streaky, State.CLOSED, "-7.1", closed=2 * hour, opened=16 * hour, fees="2.000000000001")
    trade(streaky, State.FAILED, "-0.25", closed=1 * hour, opened=1 * hour, funding="0")
    trade(streaky, State.CLOSED, "-99", closed=-1 * hour, opened=3 * hour)  # after the clock
    trade(streaky, State.OPEN, None, closed=None, opened=5 * hour)
    trade(streaky, State.CLOSING, "-4", closed=None, opened=40 * hour)  # not final
    # winner: losses, then a win today: no streak
    trade(winner, State.CLOSED, "-1", closed=10 * hour, opened=11 * hour)
    trade(winner, State.CLOSED, "5.000000000001", closed=1 * hour, opened=9 * hour)
    trade(winner, State.PLANNED, None, closed=None)
    # idle: only trades without a result
    trade(idle, State.OPEN, None, closed=None, opened=2 * hour)
    trade(idle, State.CLOSED, None, closed=3 * hour, opened=4 * hour)
    ids = [streaky.pk, winner.pk, idle.pk, fresh.pk]  # fresh: no trades at all

    start = day_start(NOW)
    for now in (NOW, NOW - 25 * hour, NOW + 2 * hour):
        got = trade_totals(ids, start=day_start(now), now=now)
        assert got == reference(ids, day_start(now), now), now
    got = trade_totals(ids, start=start, now=NOW)
    assert fresh.pk not in got
    assert got[streaky.pk] == TradeTotals(
        realised=Decimal("1.816666666667"), day_realised=Decimal("-7.35"), day_fees=Decimal("3.250000000001"),
        day_funding=Decimal("-0.5"), day_closed=2, day_opened=3,
        losing_streak=5, last_loss_at=NOW + hour,  # the streak counts every finished loss (as it did)
    )
    assert got[winner.pk].losing_streak == 0 and got[winner.pk].last_loss_at is None
    assert trade_totals([], start=start, now=NOW) == {}
