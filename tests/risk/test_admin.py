"""Raising a halt in the admin: a pause needs risk.add_halt; flattening or stopping every account also needs
execution.halt_account, as on every other channel."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from core.models import AuditEntry
from risk.models import Halt
from tests.factories import ExchangeAccountFactory

pytestmark = pytest.mark.django_db
ADD = "/admin/risk/halt/add/"


def staff(django_user_model, *codenames):
    user = django_user_model.objects.create_user("staff", password="a-long-test-password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def post(client, account, **fields):
    data = {"account": account.pk if account else "", "mode": "halt", "reason": "by hand", **fields}
    return client.post(ADD, {k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize("fields", [{"flatten": "on"}, {"all_accounts": True}], ids=["flatten", "all-accounts"])
def test_add_halt_alone_may_not_flatten_nor_stop_every_account(client, django_user_model, fields):
    client.force_login(staff(django_user_model, "add_halt", "view_halt"))
    account = None if fields.pop("all_accounts", False) else ExchangeAccountFactory()
    response = post(client, account, **fields)
    assert response.status_code == 200  # the form again, with the error on the field
    assert "execution.halt_account" in response.content.decode()
    assert not Halt.objects.exists() and not AuditEntry.objects.filter(action="raise_halt").exists()


def test_add_halt_may_pause_one_account(client, django_user_model):
    client.force_login(staff(django_user_model, "add_halt", "view_halt"))
    response = post(client, ExchangeAccountFactory())
    assert response.status_code == 302
    assert Halt.objects.get().flatten is False


def test_with_halt_account_the_admin_flattens(client, django_user_model):
    client.force_login(staff(django_user_model, "add_halt", "view_halt", "halt_account"))
    assert post(client, ExchangeAccountFactory(), flatten="on").status_code == 302
    assert post(client, None).status_code == 302
    assert Halt.objects.filter(flatten=True, account__isnull=False).count() == 1
    assert Halt.objects.filter(account__isnull=True).count() == 1
