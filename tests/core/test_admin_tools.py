"""The admin's audit of an edit (core.admin_tools.AuditedAdmin): which fields changed, and from what to what."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from core.models import AuditEntry
from execution.models import ExchangeAccount
from risk.models import RiskLimit
from tests.factories import ExchangeAccountFactory, LevelFactory, RiskLimitFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="a-long-test-password"))
    return client


def _form_data(client, url: str) -> dict:
    page = client.get(url)
    return {key: value for key, value in page.context["adminform"].form.initial.items() if value is not None}


def test_a_changed_limit_is_audited_with_its_value_before_and_after(admin_client):
    # The trail said "change risk limit ...: daily_loss_limit": after a loss an auditor could not tell what the limit
    # had been, nor what it was raised to.
    limit = RiskLimitFactory(daily_loss_limit=Decimal("200"), max_open_trades=3)
    url = reverse("admin:risk_risklimit_change", args=[limit.pk])
    data = _form_data(admin_client, url) | {"daily_loss_limit": "50000", "max_open_trades": "3"}
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert RiskLimit.objects.get(pk=limit.pk).daily_loss_limit == Decimal("50000")
    entry = AuditEntry.objects.get(action="change_risklimit")
    assert entry.details == {"fields": ["daily_loss_limit"], "before": {"daily_loss_limit": "200"},
                             "after": {"daily_loss_limit": "50000"}}
    assert entry.summary.endswith(": daily_loss_limit '200' -> '50000'")


def test_an_account_moved_to_another_level_names_both_levels(admin_client):
    account = ExchangeAccountFactory(enabled=False)
    other = LevelFactory(number=2)
    url = reverse("admin:execution_exchangeaccount_change", args=[account.pk])
    response = admin_client.post(url, _form_data(admin_client, url) | {"level": other.pk})
    assert response.status_code == 302, response.context["adminform"].form.errors
    entry = AuditEntry.objects.get(action="change_exchangeaccount")
    assert entry.details["before"] == {"level": str(account.level)} and entry.details["after"] == {"level": str(other)}


def test_new_credentials_are_named_in_the_trail_but_never_shown(admin_client, settings):
    settings.STATARB_SECRETS_KEY = Fernet.generate_key().decode()
    account = ExchangeAccountFactory(enabled=False)
    url = reverse("admin:execution_exchangeaccount_change", args=[account.pk])
    data = _form_data(admin_client, url) | {"new_api_key": "key-abcdef-123456", "new_api_secret": "secret-987654-xyz",
                                            "capital": "2500"}
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ExchangeAccount.objects.get(pk=account.pk).has_stored_credentials
    entry = AuditEntry.objects.get(action="change_exchangeaccount")
    assert entry.details["fields"] == ["capital", "new_api_key", "new_api_secret"]
    assert set(entry.details["before"]) == set(entry.details["after"]) == {"capital"}
    trail = str(list(AuditEntry.objects.values()))
    assert "key-abcdef-123456" not in trail and "secret-987654-xyz" not in trail


def test_a_user_made_superuser_is_audited_with_the_flag_before_and_after(admin_client, django_user_model):
    user = django_user_model.objects.create_user("carol", password="a-long-test-password-2")
    url = reverse("admin:auth_user_change", args=[user.pk])
    data = {"username": "carol", "is_active": "on", "is_superuser": "on",
            "date_joined_0": f"{user.date_joined:%Y-%m-%d}", "date_joined_1": f"{user.date_joined:%H:%M:%S}"}
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    entry = AuditEntry.objects.get(action="change_user")
    assert entry.details["before"]["is_superuser"] == "False" and entry.details["after"]["is_superuser"] == "True"
    assert "password" not in entry.details["before"] and "pbkdf2" not in str(entry.details)
