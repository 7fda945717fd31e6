"""CompiledRead: the ORM's statement compiled once, run again with other values, gives what the ORM gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from core.statements import CompiledRead
from execution.models import ExchangeAccount, PairTrade
from tests.factories import ExchangeAccountFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)


def trades_of(account_id: int, since: datetime, states: list[str]):
    return (PairTrade.objects.filter(account_id=account_id, opened_at__gte=since, state__in=states)
            .select_related("pair__y_instrument").annotate(y_symbol=F("pair__y_instrument__symbol")).order_by("pk"))


def rows_of(account_id: int, name: str):
    return ExchangeAccount.objects.filter(pk=account_id, name=name).values_list("pk", "capital", "updated_at")


def test_the_compiled_read_answers_as_the_orm_for_other_values():
    accounts = [ExchangeAccountFactory() for _ in range(2)]
    for n, account in enumerate(accounts * 3):
        PairTradeFactory(account=account, opened_at=NOW - timedelta(hours=n),
                         state=PairTrade.State.OPEN if n % 2 else PairTrade.State.CLOSED)
    read = CompiledRead(trades_of)
    for account in accounts:
        for since in (NOW - timedelta(hours=3), NOW - timedelta(days=1), NOW + timedelta(hours=1)):
            for states in (["open"], ["open", "closed"], ("closed", "open", "closed")):
                got = read.list(account.pk, since, states)
                expected = list(trades_of(account.pk, since, list(dict.fromkeys(states))))
                assert [(t.pk, t.pair.y_instrument.symbol, t.y_symbol, t.opened_at) for t in got] == \
                    [(t.pk, t.pair.y_instrument.symbol, t.y_symbol, t.opened_at) for t in expected]
    assert all(entry for entry in read._cache.values())  # compiled, never fell back to the ORM
    assert len(read._cache) == 2  # one shape per length of the list of states


def test_values_are_converted_and_a_compiled_read_sends_one_statement():
    account = ExchangeAccountFactory()
    read = CompiledRead(rows_of)
    assert read.list(account.pk, account.name) == list(rows_of(account.pk, account.name))
    with CaptureQueriesContext(connection) as queries:
        assert read.list(account.pk, "someone else") == []
        got = read.list(account.pk, account.name)
    assert len(queries) == 2
    assert got == list(rows_of(account.pk, account.name)) and got[0][2].tzinfo is not None


def test_what_it_can_not_compile_goes_through_the_orm():
    account = ExchangeAccountFactory()
    read = CompiledRead(lambda ids: ExchangeAccount.objects.filter(pk__in=ids).values_list("pk", flat=True))
    assert read.list([]) == []  # an empty list matches nothing: the ORM knows without asking
    assert read.list([account.pk, account.pk]) == [account.pk]
    odd = CompiledRead(lambda capital: ExchangeAccount.objects.filter(capital=capital).values_list("pk", flat=True))
    assert odd.list(None) == [] and odd._cache == {}


def test_a_locking_read_still_locks_inside_a_transaction():
    account = ExchangeAccountFactory()
    read = CompiledRead(lambda pk: ExchangeAccount.objects.select_for_update().filter(pk=pk).values_list("pk"))
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert read.list(account.pk) == [(account.pk,)]
        assert read.list(account.pk) == [(account.pk,)]
    if connection.features.has_select_for_update:
        assert all("FOR UPDATE" in q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT"))
