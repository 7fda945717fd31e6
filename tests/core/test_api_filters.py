"""core.api_filters through the lists that use them: a stable order on every ?ordering=, keyset paging, one rule for
an account given by digits, bounded dates and strict booleans, each refusal a 400 naming its parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from core.api_filters import StableOrderingFilter
from execution.api import TradeListApi
from execution.models import PairTrade
from pairs.models import Pair
from risk.models import Halt
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    HaltFactory,
    PairFactory,
    PairTradeFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _walk(api_client, url: str, key: str = "id") -> list:
    seen, page = [], api_client.get(url)
    while True:
        assert page.status_code == 200, page.content
        seen += [row[key] for row in page.json()["results"]]
        if not page.json()["next"]:
            return seen
        page = api_client.get(page.json()["next"])


@pytest.mark.parametrize(("asked", "ordered"), [
    ("fees", ["fees", "pk"]), ("-fees", ["-fees", "-pk"]), ("-realised_pnl,fees", ["-realised_pnl", "fees", "pk"]),
    ("fees,-realised_pnl", ["fees", "-realised_pnl", "-pk"]), ("-id", ["-id"]), ("fees,id", ["fees", "id"]),
])
def test_an_ordering_ends_with_the_primary_key_in_the_direction_of_the_last_key(asked, ordered):
    request = Request(APIRequestFactory().get("/api/v1/trades/", {"ordering": asked}))
    view = TradeListApi()
    assert StableOrderingFilter().get_ordering(request, PairTrade.objects.all(), view) == ordered


@pytest.mark.parametrize("ordering", ["fees", "-fees", "realised_pnl,fees"])
def test_paging_through_ties_reads_every_trade_exactly_once(api_client, ordering):
    """MariaDB returns rows that tie in any order, one page's query to the next: the primary key breaks the tie."""
    account = ExchangeAccountFactory()
    trades = [PairTradeFactory(account=account, fees=Decimal(i % 2), realised_pnl=Decimal(0)) for i in range(23)]

    seen = _walk(api_client, f"/api/v1/trades/?ordering={ordering}&limit=4")

    assert sorted(seen) == sorted(t.pk for t in trades)  # each once: no row skipped, none repeated


def test_paging_ties_in_pairs_statistics_and_daily_pnl_reads_every_row_once(api_client):
    pairs = [PairFactory(last_tested_at=T0) for _ in range(9)]
    assert sorted(_walk(api_client, "/api/v1/pairs/?ordering=last_tested_at&limit=2")) == sorted(p.pk for p in pairs)
    account = ExchangeAccountFactory()
    days = [DailyPnlSnapshotFactory(account=account, date=(T0 + timedelta(days=i)).date(), realised_pnl=0)
            for i in range(9)]
    seen = _walk(api_client, "/api/v1/pnl/daily/?ordering=-realised_pnl&limit=2", key="date")
    assert sorted(seen) == sorted(d.date.isoformat() for d in days)


def test_keyset_paging_neither_repeats_nor_misses_trades_added_meanwhile(api_client):
    account = ExchangeAccountFactory()
    first = [PairTradeFactory(account=account).pk for _ in range(5)]

    page = api_client.get("/api/v1/trades/?id_after=0&limit=2")
    assert page.status_code == 200
    assert [row["id"] for row in page.json()["results"]] == first[:2]
    assert f"id_after={first[1]}" in page.json()["next"] and "offset" not in page.json()["next"]
    assert page["Link"] == f'<{page.json()["next"]}>; rel="next"'
    seen = [row["id"] for row in page.json()["results"]]
    added = [PairTradeFactory(account=account).pk for _ in range(3)]  # new trades arrive while a tool pages
    seen += _walk(api_client, page.json()["next"])

    assert seen == first + added  # ascending, each exactly once
    # The same rows by offset, newest first, would have repeated first[2] after the three additions.


@pytest.mark.parametrize(("query", "named"), [("id_after=3&ordering=fees", "ordering"),
                                              ("id_after=3&offset=10", "offset"), ("id_after=x", "id_after"),
                                              ("id_after=-1", "id_after")])
def test_keyset_paging_refuses_what_contradicts_it(api_client, query, named):
    response = api_client.get(f"/api/v1/trades/?{query}")
    assert response.status_code == 400
    assert named in response.json()


@pytest.mark.parametrize("path", ["orders", "fills", "funding"])
def test_the_other_append_only_lists_page_by_keyset_too(api_client, path):
    assert api_client.get(f"/api/v1/{path}/?id_after=0&limit=5").status_code == 200


def test_an_all_digit_account_is_the_id_when_there_is_one_else_the_name(api_client):
    by_id = ExchangeAccountFactory(name="main")
    by_name = ExchangeAccountFactory(name=str(by_id.pk))  # an account named like the other's id
    named_only = ExchangeAccountFactory(name="987654")
    trades = {a.pk: PairTradeFactory(account=a).pk for a in (by_id, by_name, named_only)}

    def ids(value):
        response = api_client.get("/api/v1/trades/", {"account": value})
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids(str(by_id.pk)) == [trades[by_id.pk]]  # the id wins; not both
    assert ids("987654") == [trades[named_only.pk]]  # no such id: the name
    assert ids(f"  {by_id.pk} ") == [trades[by_id.pk]]
    # The kill switch and the performance scopes read it the same way.
    assert api_client.get("/api/v1/performance/", {"account": str(by_id.pk)}).json()["accounts"] == ["main"]


@pytest.mark.parametrize(("path", "parameter", "value"), [
    ("trades", "closed_until", "9999-12-31"),
    ("trades", "closed_until", "0001-01-01"),
    ("trades", "closed_after", "9999-12-31T23:59:59-05:00"),
    ("trades", "closed_after", "0001-01-01T00:00:00+05:00"),
    ("trades", "opened_before", "2200-01-01T00:00:00Z"),
    ("orders", "created_after", "9999-12-31T23:59:59-05:00"),
    ("fills", "filled_before", "0001-01-01T00:00:00+05:00"),
    ("funding", "settled_after", "9999-12-31T23:59:59-05:00"),
    ("halts", "created_after", "0001-01-01T00:00:00+05:00"),
    ("guard-events", "created_before", "9999-12-31T23:59:59-05:00"),
    ("pnl/daily", "date_to", "9999-12-31"),
])
def test_a_date_out_of_bounds_is_a_400_naming_it_not_a_server_error(api_client, path, parameter, value):
    response = api_client.get(f"/api/v1/{path}/", {parameter: value})
    assert response.status_code == 400, response.content
    assert "between 2010 and 2100" in str(response.json()[parameter])


def test_dates_within_the_bounds_still_filter(api_client):
    account = ExchangeAccountFactory()
    trade = PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0,
                             closed_at=T0 + timedelta(hours=23))
    for query in ({"closed_until": "2024-03-01"}, {"closed_after": "2024-03-01T05:00:00+05:00"},
                  {"closed_before": "2100-01-01T00:00:00Z"}):
        assert [r["id"] for r in api_client.get("/api/v1/trades/", query).json()["results"]] == [trade.pk], query
    assert api_client.get("/api/v1/trades/", {"closed_until": "2024-02-29"}).json()["results"] == []


@pytest.mark.parametrize(("path", "parameter"), [("trades", "closed_until"), ("pnl/daily", "date_from"),
                                                  ("pnl/daily", "date_to")])
@pytest.mark.parametrize("value", ["01/02/2024", "01/02/24", "2024/01/02"])
def test_a_day_is_an_iso_date_only_not_a_us_one(api_client, path, parameter, value):
    """01/02/2024 is the 1st of February to most of the world and was read as the 2nd of January (Django's US input
    formats): a report filtered on the wrong month, without a word. performance/ and equity/ already refuse it."""
    response = api_client.get(f"/api/v1/{path}/", {parameter: value})
    assert response.status_code == 400, response.content
    assert response.json() == {parameter: ["an ISO 8601 date (2024-03-01) is expected"]}


def test_an_iso_day_still_filters_the_daily_pnl(api_client):
    kept = DailyPnlSnapshotFactory(date=T0.date())
    DailyPnlSnapshotFactory(account=kept.account, date=T0.date() + timedelta(days=1))
    days = api_client.get("/api/v1/pnl/daily/", {"date_from": "2024-03-01", "date_to": "2024-03-01"}).json()
    assert [row["date"] for row in days["results"]] == ["2024-03-01"]


@pytest.mark.parametrize(("path", "parameter"), [("halts", "active"), ("halts", "flatten"), ("accounts", "enabled"),
                                                 ("pairs", "level_locked")])
@pytest.mark.parametrize("value", ["yes", "maybe", "2", "on"])
def test_a_boolean_filter_takes_true_false_1_or_0_only(api_client, path, parameter, value):
    response = api_client.get(f"/api/v1/{path}/", {parameter: value})
    assert response.status_code == 400, response.content
    assert parameter in response.json()


@pytest.mark.parametrize(("path", "parameter"), [("halts", "active"), ("halts", "flatten"), ("accounts", "enabled"),
                                                 ("pairs", "level_locked")])
@pytest.mark.parametrize("value", ["100%", "%s", "%(x)s", "%"])
def test_a_boolean_filter_value_with_a_percent_sign_is_a_400_naming_it_not_a_500(api_client, path, parameter, value):
    # django-filter %-formats each message: the value written into it raised TypeError ("not enough arguments").
    response = api_client.get(f"/api/v1/{path}/", {parameter: value})

    assert response.status_code == 400, response.content
    assert response.json() == {parameter: [f"true or false (1 or 0) is expected, not {value!r}"]}


def test_a_boolean_filter_filters(api_client):
    active = HaltFactory()
    cleared = HaltFactory(cleared_at=T0)
    PairFactory(level_locked=True)
    for value, expected in (("true", [active.pk]), ("1", [active.pk]), ("FALSE", [cleared.pk]), ("0", [cleared.pk])):
        rows = api_client.get("/api/v1/halts/", {"active": value}).json()["results"]
        assert [r["id"] for r in rows] == expected, value
    assert api_client.get("/api/v1/halts/", {"active": ""}).json()["count"] == Halt.objects.count()
    assert api_client.get("/api/v1/pairs/", {"level_locked": "true"}).json()["count"] == \
        Pair.objects.filter(level_locked=True).count() == 1
