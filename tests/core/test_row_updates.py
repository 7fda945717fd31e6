"""row_update: the statement built once writes what QuerySet.update writes, under its condition, and hands back
to the ORM what it does not handle."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from core.row_updates import row_update
from execution.models import BotHeartbeat, ExchangeAccount, Order
from tests.factories import ExchangeAccountFactory, OrderFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2024, 3, 5, 14, 30, 1, 250_000, tzinfo=UTC)
FIELDS = ["exchange_order_id", "filled_qty", "avg_price", "fee", "status", "submitted_at", "error", "instrument_id"]


def _written(order: Order) -> dict:
    return {name: getattr(Order.objects.get(pk=order.pk), name) for name in FIELDS}


def test_the_row_holds_what_the_orm_update_writes():
    by_statement, by_orm = OrderFactory(), OrderFactory()
    for order in (by_statement, by_orm):
        order.exchange_order_id = "abc-1"
        order.filled_qty = Decimal("0.123456789012")
        order.avg_price = Decimal("43210.5")
        order.fee = Decimal("-0.000000000001")
        order.status = Order.Status.FILLED
        order.submitted_at = NOW
        order.error = "an 'error' with quotes; and % signs"
    by_orm.instrument_id = by_statement.instrument_id
    assert row_update(by_statement, FIELDS) == 1
    Order.objects.filter(pk=by_orm.pk).update(**{name: getattr(by_orm, name) for name in FIELDS})
    assert _written(by_statement) == _written(by_orm)
    assert _written(by_statement)["submitted_at"] == NOW
    assert _written(by_statement)["fee"] == Decimal("-0.000000000001")


def test_nothing_is_written_when_the_condition_fails_and_a_none_is_written_as_null():
    order = OrderFactory(error="kept")
    account = ExchangeAccountFactory()
    BotHeartbeat.objects.create(account=account, lease_generation=3, beat_at=NOW)
    order.error = "changed"
    order.submitted_at = None
    stale = (BotHeartbeat, {"account_id": account.pk, "lease_generation": 2})
    assert row_update(order, ["error", "submitted_at"], exists=stale) == 0
    assert Order.objects.get(pk=order.pk).error == "kept"
    held = (BotHeartbeat, {"account_id": account.pk, "lease_generation": 3})
    assert row_update(order, ["error", "submitted_at"], exists=held) == 1
    stored = Order.objects.get(pk=order.pk)
    assert (stored.error, stored.submitted_at) == ("changed", None)


def test_one_statement_and_the_orm_keeps_what_it_does_not_handle():
    account = ExchangeAccountFactory(capital=Decimal("100"))
    account.capital = Decimal("250.5")
    with CaptureQueriesContext(connection) as queries:
        assert row_update(account, ["capital"]) == 1
    assert len(queries) == 1 and queries[0]["sql"].startswith("UPDATE")
    assert ExchangeAccount.objects.get(pk=account.pk).capital == Decimal("250.5")
    account.capital = F("capital") + 1
    assert row_update(account, ["capital"]) is None  # an expression: the caller asks the ORM
    assert ExchangeAccount.objects.get(pk=account.pk).capital == Decimal("250.5")
    unsaved = ExchangeAccount(name="not stored")
    assert row_update(unsaved, ["name"]) is None


def test_an_empty_condition_or_a_row_as_a_value_is_left_to_the_orm():
    order = OrderFactory(error="kept")
    order.error = "changed"
    assert row_update(order, ["error"], exists=(BotHeartbeat, {})) is None
    order.trade_id = order.trade  # a row where a key belongs: the ORM's business (and its error)
    assert row_update(order, ["trade_id"]) is None
    assert Order.objects.get(pk=order.pk).error == "kept"
