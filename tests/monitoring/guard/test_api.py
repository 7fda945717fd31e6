"""The kill switch over the API (monitoring.guard.api): a field it doesn't know is refused, never ignored."""

from __future__ import annotations

import pytest

from core.models import AuditEntry
from risk.models import Halt
from tests.factories import ExchangeAccountFactory, HaltFactory

pytestmark = pytest.mark.django_db


def test_a_typo_in_a_halts_field_is_refused_and_halts_nothing(api_client):
    ExchangeAccountFactory(name="main")

    response = api_client.post("/api/v1/halt/", {"acount": "main", "reason": "typo"}, format="json")

    assert response.status_code == 400
    assert "acount" in response.json() and "unknown field" in response.json()["acount"][0]
    assert not Halt.objects.exists()  # not every account halted


def test_a_halt_with_known_fields_halts_the_account(api_client):
    account = ExchangeAccountFactory(name="main")
    response = api_client.post("/api/v1/halt/", {"account": str(account.pk), "reason": "incident"}, format="json")
    assert response.status_code == 201, response.content
    assert Halt.objects.get().account == account


def test_a_typo_in_a_resumes_field_is_refused_and_clears_nothing(api_client):
    account = ExchangeAccountFactory(name="main")
    halt = HaltFactory(account=None)

    response = api_client.post("/api/v1/resume/", {"acount": account.name}, format="json")

    assert response.status_code == 400 and "acount" in response.json()
    halt.refresh_from_db()
    assert halt.cleared_at is None
    assert not AuditEntry.objects.filter(action__icontains="resume").exists()


@pytest.mark.parametrize("spelling", ["yes", "on", "y"])
def test_a_flatten_spelled_other_than_true_false_1_0_is_refused(api_client, spelling):
    ExchangeAccountFactory(name="main")
    response = api_client.post("/api/v1/halt/", {"account": "main", "reason": "x", "flatten": spelling})
    assert response.status_code == 400 and "flatten" in response.json()
    assert not Halt.objects.exists()


def test_a_flatten_of_true_or_1_flattens(api_client):
    ExchangeAccountFactory(name="main")
    response = api_client.post("/api/v1/halt/", {"account": "main", "reason": "x", "flatten": "1"})
    assert response.status_code == 201 and Halt.objects.get().flatten


def test_an_account_given_in_the_query_string_is_refused_not_a_halt_of_every_account(api_client):
    """The fields are the body's: POST halt/?account=main&flatten=true with the reason in the body halted and
    flattened every account, the query string ignored."""
    ExchangeAccountFactory(name="main")
    ExchangeAccountFactory(name="other")

    response = api_client.post("/api/v1/halt/?account=main&flatten=true", {"reason": "incident"}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"account": ["unknown query parameter"], "flatten": ["unknown query parameter"]}
    assert not Halt.objects.exists()
    assert not AuditEntry.objects.exists()


def test_an_account_given_in_the_query_string_of_a_resume_is_refused_not_a_clear_of_the_system_wide_halts(
        api_client):
    ExchangeAccountFactory(name="main")
    system_wide = HaltFactory(account=None)

    response = api_client.post("/api/v1/resume/?account=main", {}, format="json")

    assert response.status_code == 400 and response.json() == {"account": ["unknown query parameter"]}
    system_wide.refresh_from_db()
    assert system_wide.cleared_at is None


def test_a_null_account_is_refused_not_a_halt_and_flatten_of_every_account(api_client):
    """A script whose account variable is unset sends ``"account": null``: that flattened every account."""
    ExchangeAccountFactory(name="main")

    response = api_client.post("/api/v1/halt/", {"account": None, "reason": "x", "flatten": True}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"account": ["null is not an account: leave the field out to mean every account"]}
    assert not Halt.objects.exists()


def test_a_null_account_is_refused_not_a_clear_of_the_system_wide_halts(api_client):
    system_wide = HaltFactory(account=None)

    response = api_client.post("/api/v1/resume/", {"account": None}, format="json")

    assert response.status_code == 400, response.content
    assert "leave the field out to mean the system-wide halts" in response.json()["account"][0]
    system_wide.refresh_from_db()
    assert system_wide.cleared_at is None


def test_an_account_left_empty_in_the_browsable_forms_halts_every_account(api_client):
    """The browsable API's HTML form sends an empty field for 'every account' (form-encoded, not JSON)."""
    ExchangeAccountFactory(name="main")
    ExchangeAccountFactory(name="other")

    response = api_client.post("/api/v1/halt/", {"account": "", "reason": "incident"})

    assert response.status_code == 201, response.content
    assert Halt.objects.get().account is None


def test_a_halt_over_the_api_is_audited_with_the_token_that_asked_for_it(staff_client, client):
    """After a leak, the changes one token made must be told from those of the user's other tokens and sessions."""
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    ExchangeAccountFactory(name="main")
    stored, token = AuthToken.objects.create(user=staff_client.user)
    by_token = APIClient()
    by_token.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = by_token.post("/api/v1/halt/", {"account": "main", "reason": "incident"}, format="json")
    assert response.status_code == 201, response.content
    assert staff_client.post("/api/v1/resume/", {"account": "main"},
                             content_type="application/json").status_code == 200

    halted, resumed = AuditEntry.objects.filter(channel="api").order_by("pk")
    assert halted.actor == staff_client.user
    assert halted.actor_label == f"trader via API token {stored.token_key}"
    assert token not in halted.actor_label  # the key is the token's public prefix, never the token
    assert resumed.actor_label == "trader via a session"
