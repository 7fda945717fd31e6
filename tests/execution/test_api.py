"""The execution reporting API: accounts without credentials, trades with their orders."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from core.api import BoundedPagination
from execution.models import Order, PairTrade
from execution.services.accounts import account_store_credentials
from tests.factories import ExchangeAccountFactory, InstrumentFactory, OrderFactory, PairFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

PLAIN_KEY = "api-plain-key-Gh6Jk7Lq"
PLAIN_SECRET = "api-plain-secret-Vb3Nm4Zx"

ACCOUNT_FIELDS = {
    "id", "name", "exchange", "mode", "level", "capital", "per_trade_budget", "max_concurrent_trades", "leverage",
    "position_mode", "enabled",
}


def test_accounts_have_no_credential_fields_nor_values(api_client, secrets_key):
    account = ExchangeAccountFactory(name="bybit-main", api_key_env="STATARB_CRED_KEY_VAR",
                                     api_secret_env="STATARB_CRED_SECRET_VAR")
    account_store_credentials(account=account, api_key=PLAIN_KEY, api_secret=PLAIN_SECRET)
    account.refresh_from_db()

    response = api_client.get("/api/v1/accounts/")

    assert response.status_code == 200
    body = response.content.decode()
    for forbidden in (
        PLAIN_KEY, PLAIN_SECRET, account.api_key_encrypted, account.api_secret_encrypted,
        "api_key", "api_secret", "encrypted", "STATARB_CRED_KEY_VAR", "STATARB_CRED_SECRET_VAR",
    ):
        assert forbidden not in body
    [row] = response.json()["results"]
    assert set(row) == ACCOUNT_FIELDS
    assert row["name"] == "bybit-main"
    assert row["level"] == 1
    assert row["capital"] == "10000.000000000000"


def test_trades_list_with_their_orders(api_client):
    pair = PairFactory(
        y_instrument=InstrumentFactory(symbol="BTCUSDT", base="BTC"),
        x_instrument=InstrumentFactory(symbol="ETHUSDT", base="ETH"),
    )
    account = ExchangeAccountFactory(name="bybit-main")
    trade = PairTradeFactory(account=account, pair=pair, state=PairTrade.State.OPEN)
    OrderFactory(
        trade=trade, instrument=pair.y_instrument, leg=Order.Leg.Y, side=Order.Side.BUY, qty=Decimal("0.5"),
        filled_qty=Decimal("0.5"), client_order_id="sa-1-y-open", status=Order.Status.FILLED,
    )
    OrderFactory(
        trade=trade, instrument=pair.x_instrument, leg=Order.Leg.X, side=Order.Side.SELL, qty=Decimal("7.25"),
        client_order_id="sa-1-x-open",
    )

    response = api_client.get("/api/v1/trades/")

    assert response.status_code == 200
    data = response.json()
    assert data["count"] == 1
    [row] = data["results"]
    assert (row["id"], row["account"], row["y"], row["x"], row["state"]) == (
        trade.pk, "bybit-main", "BTCUSDT", "ETHUSDT", "open",
    )
    orders = {o["client_order_id"]: o for o in row["orders"]}
    assert set(orders) == {"sa-1-y-open", "sa-1-x-open"}
    assert orders["sa-1-y-open"]["symbol"] == "BTCUSDT"
    assert orders["sa-1-y-open"]["qty"] == "0.500000000000"
    assert orders["sa-1-y-open"]["filled_qty"] == "0.500000000000"
    assert orders["sa-1-y-open"]["status"] == "filled"
    assert (orders["sa-1-x-open"]["symbol"], orders["sa-1-x-open"]["side"], orders["sa-1-x-open"]["qty"]) == (
        "ETHUSDT", "sell", "7.250000000000",
    )


def test_trades_filter_by_state(api_client):
    account = ExchangeAccountFactory()
    open_trade = PairTradeFactory(account=account, state=PairTrade.State.OPEN)
    closed = PairTradeFactory(
        account=account, state=PairTrade.State.CLOSED, closed_at=datetime(2021, 3, 2, tzinfo=UTC),
        realised_pnl=Decimal("12.5"),
    )
    failed = PairTradeFactory(account=account, state=PairTrade.State.FAILED)

    def ids(**params):
        response = api_client.get("/api/v1/trades/", params)
        assert response.status_code == 200
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [failed.pk, closed.pk, open_trade.pk]
    assert ids(state="closed") == [closed.pk]
    assert ids(state="open") == [open_trade.pk]
    assert ids(state="closing") == []
    [row] = api_client.get("/api/v1/trades/", {"state": "closed"}).json()["results"]
    assert row["realised_pnl"] == "12.500000000000"


@pytest.mark.parametrize("path", ["/api/v1/accounts/", "/api/v1/trades/"])
def test_anonymous_requests_are_refused(client, path):
    ExchangeAccountFactory()
    response = client.get(path)
    assert response.status_code in (401, 403)
    assert b"account-" not in response.content


def test_a_reporting_user_reads_but_sees_no_credentials(client, django_user_model, secrets_key):
    account = ExchangeAccountFactory()
    account_store_credentials(account=account, api_key=PLAIN_KEY, api_secret=PLAIN_SECRET)
    user = django_user_model.objects.create_user(username="viewer", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="reporting"))
    client.force_login(user)
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 200
    assert PLAIN_KEY.encode() not in response.content


def test_staff_closes_a_trade_by_hand_through_the_api(api_client, django_capture_on_commit_callbacks):
    trade = PairTradeFactory(state=PairTrade.State.OPEN)
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client.post(f"/api/v1/trades/{trade.pk}/close/")
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "open" and response.json()["close_requested_at"]
    trade.refresh_from_db()
    assert trade.close_requested_at is not None and trade.close_requested_by is not None
    assert len(callbacks) == 1  # the account's bot is woken once the request is committed


def test_closing_a_finished_trade_is_a_conflict_and_unknown_is_404(api_client):
    trade = PairTradeFactory(state=PairTrade.State.CLOSED)
    assert api_client.post(f"/api/v1/trades/{trade.pk}/close/").status_code == 409
    assert api_client.post("/api/v1/trades/999999/close/").status_code == 404


def test_only_staff_may_close_trades(client, django_user_model):
    trade = PairTradeFactory(state=PairTrade.State.OPEN)
    user = django_user_model.objects.create_user("viewer", password="pw-Viewer-1")
    client.force_login(user)
    assert client.post(f"/api/v1/trades/{trade.pk}/close/").status_code == 403
    trade.refresh_from_db()
    assert trade.close_requested_at is None


def test_a_refused_close_is_audited_with_who_asked(django_user_model):
    from rest_framework.test import APIClient

    from core.models import AuditEntry

    trade = PairTradeFactory(state=PairTrade.State.OPEN)
    viewer = django_user_model.objects.create_user("viewer", password="pw-Viewer-1")
    viewer.groups.add(Group.objects.get(name="viewer"))
    api = APIClient()
    api.force_authenticate(viewer)
    # Looking at the endpoint's page in the browsable API (which asks whether it may show a POST form) is no
    # attempt: nothing is audited.
    api.get(f"/api/v1/trades/{trade.pk}/close/", HTTP_ACCEPT="text/html")
    assert not AuditEntry.objects.filter(action="refused").exists()
    assert api.post(f"/api/v1/trades/{trade.pk}/close/").status_code == 403
    entry = AuditEntry.objects.get(action="refused")
    assert (entry.channel, entry.actor) == ("api", viewer)
    assert entry.summary == (f"POST /api/v1/trades/{trade.pk}/close/ refused: viewer lacks the permission "
                             "execution.close_trade")
    trade.refresh_from_db()
    assert trade.close_requested_at is None


def test_pages_know_their_next_page_without_counting_a_long_list(api_client, monkeypatch):
    account = ExchangeAccountFactory(name="pages")
    trades = [PairTradeFactory(account=account) for _ in range(5)]
    first = api_client.get("/api/v1/trades/", {"account": "pages", "limit": 2}).json()
    assert first["count"] == 5 and [t["id"] for t in first["results"]] == [t.pk for t in trades[::-1][:2]]
    assert "offset=2" in first["next"]
    last = api_client.get("/api/v1/trades/", {"account": account.pk, "limit": 2, "offset": 4}).json()
    assert last["count"] == 5 and last["next"] is None and len(last["results"]) == 1
    # Beyond COUNT_LIMIT rows the count is null; paging goes on by the next link.
    monkeypatch.setattr(BoundedPagination, "COUNT_LIMIT", 3)
    capped = api_client.get("/api/v1/trades/", {"account": "pages", "limit": 2, "offset": 2}).json()
    assert capped["count"] is None and "offset=4" in capped["next"] and len(capped["results"]) == 2
    assert api_client.get("/api/v1/trades/", {"account": "nobody"}).status_code == 400  # a typo, not "no trades"


@pytest.mark.parametrize("url", ["/api/v1/trades/?account=nope", "/api/v1/trades/?account=999999",
                                 "/api/v1/pnl/daily/?account=nope"])
def test_an_unknown_account_is_an_error_naming_it_not_an_empty_list(api_client, url):
    # A typo in a reporting tool must not read as "no trades".
    ExchangeAccountFactory(name="bybit-main")
    response = api_client.get(url)
    assert response.status_code == 400 and "account" in response.json(), response.content
    assert "no exchange account with id or name" in response.json()["account"][0]


def test_a_known_account_by_name_or_id_still_filters(api_client):
    account = ExchangeAccountFactory(name="bybit-main")
    PairTradeFactory(account=account, state=PairTrade.State.OPEN)
    PairTradeFactory(account=ExchangeAccountFactory(name="other"), state=PairTrade.State.OPEN)
    for value in ("bybit-main", str(account.pk)):
        assert api_client.get(f"/api/v1/trades/?account={value}").json()["count"] == 1


def test_a_csv_page_says_in_its_headers_that_more_rows_follow(api_client):
    account = ExchangeAccountFactory(name="csv-pages")
    for _ in range(3):
        PairTradeFactory(account=account)
    response = api_client.get("/api/v1/trades/", {"account": "csv-pages", "limit": 2, "format": "csv"})
    assert response.status_code == 200 and response.content.decode().count("\r\n") == 3  # header + 2 rows
    assert response["X-Total-Count"] == "3" and 'rel="next"' in response["Link"] and "offset=2" in response["Link"]
    last = api_client.get("/api/v1/trades/", {"account": "csv-pages", "limit": 2, "offset": 2, "format": "csv"})
    assert "Link" not in last and last["X-Total-Count"] == "3"


def test_closing_a_trade_of_a_disabled_account_is_a_conflict_saying_why_and_audited(api_client):
    from core.models import AuditEntry

    trade = PairTradeFactory(state=PairTrade.State.OPEN, account=ExchangeAccountFactory(name="replay", enabled=False))

    response = api_client.post(f"/api/v1/trades/{trade.pk}/close/")

    assert response.status_code == 409
    assert "replay is disabled" in response.json()["detail"]
    trade.refresh_from_db()
    assert trade.close_requested_at is None  # nothing stored that no bot would act on
    entry = AuditEntry.objects.get(action="refused")
    assert entry.target_id == str(trade.pk) and "disabled" in entry.summary


def test_a_close_takes_no_body_field(api_client):
    trade = PairTradeFactory(state=PairTrade.State.OPEN)
    response = api_client.post(f"/api/v1/trades/{trade.pk}/close/", {"reason": "x"}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    trade.refresh_from_db()
    assert trade.close_requested_at is None


def test_a_close_with_a_query_parameter_is_refused_and_closes_nothing(api_client):
    """A write reads its body only: ?dry_run=1 must not read as honoured while the trade is asked to close."""
    trade = PairTradeFactory(state=PairTrade.State.OPEN)
    response = api_client.post(f"/api/v1/trades/{trade.pk}/close/?dry_run=1", {}, format="json")
    assert response.status_code == 400 and response.json() == {"dry_run": ["unknown query parameter"]}
    trade.refresh_from_db()
    assert trade.close_requested_at is None
    # ?format= still chooses how the answer is written.
    assert api_client.post(f"/api/v1/trades/{trade.pk}/close/?format=json", {}, format="json").status_code == 202
