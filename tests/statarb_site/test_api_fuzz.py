"""The API fuzzed against its own OpenAPI schema (schemathesis): whatever a client sends, no answer is a server
error, every answer conforms to the schema, and without a token every endpoint refuses."""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from knox.models import AuthToken
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from statarb_site.wsgi import application
from tests.factories import (
    DailyPnlSnapshotFactory,
    FillFactory,
    GuardEventFactory,
    HaltFactory,
    OrderFactory,
    PairTradeFactory,
)

EXAMPLES = 40  # per operation and mode: about 2,000 requests in all


@pytest.fixture
def trader_token(db, django_user_model) -> str:
    # Rows on every list, so serialisers run on real values, not only on empty pages.
    trade = PairTradeFactory()
    FillFactory(order=OrderFactory(trade=trade, filled_qty=10, avg_price=100))
    DailyPnlSnapshotFactory(account=trade.account)
    GuardEventFactory(account=trade.account)
    HaltFactory(account=trade.account)
    user = django_user_model.objects.create_user("fuzzer", password="unused-password-123")
    user.groups.add(Group.objects.get(name="trader"))
    return AuthToken.objects.create(user=user)[1]


@pytest.fixture
def api_schema(trader_token):
    # As Django's test client does: the requests run inside the test's transaction, whose connection the end of
    # a request must not close.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema/", application,
                                             headers={"Authorization": f"Token {trader_token}"})
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _routes(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _fuzz(operation, mode: GenerationMode, token: str) -> int:
    """Send ``operation`` the cases hypothesis makes in ``mode``; returns how many requests were sent."""
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        nonlocal sent
        cache.clear()  # the throttle counts per minute; the fuzzer is not what is tested there
        response = case.call(headers={"Authorization": f"Token {token}"})
        label = f"{case.method} {case.formatted_path} {case.query}"
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
        if mode is GenerationMode.POSITIVE:
            # An id that names no row is refused (400) though the schema can't say which ids exist.
            case.validate_response(response, excluded_checks=[ignored_auth, positive_data_acceptance])
        # A path that routes nowhere (an id that is not a number) is not found before anyone is asked who they are.
        refused = 401 if _routes(case.formatted_path) else 404
        anonymous = case.call(headers={"Authorization": ""})
        assert anonymous.status_code == refused, f"{label} answered {anonymous.status_code} without a token"
        forged = case.call(headers={"Authorization": "Token " + "0" * 64})
        assert forged.status_code == refused, f"{label} answered {forged.status_code} to a forged token"
        sent += 3

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters has no invalid request to make (negative mode) beyond the token.
        assert mode is GenerationMode.NEGATIVE
    return sent


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_is_a_server_error_and_none_gets_in_without_a_token(api_schema, trader_token, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    sent = sum(_fuzz(operation, mode, trader_token) for operation in operations)
    assert sent >= len(operations) * 3 * (EXAMPLES // 2 if mode is GenerationMode.POSITIVE else 1)
