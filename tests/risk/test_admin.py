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


LIMIT_FORM = {"account": "", "consecutive_losses_cooldown_minutes": "720", "stale_data_minutes": "150",
              "error_burst_minutes": "10", "actions": "{}", "enabled": "on"}


@pytest.mark.parametrize(("field", "bound"), [("consecutive_losses_cooldown_minutes", 525_600),
                                              ("stale_data_minutes", 525_600), ("error_burst_minutes", 10_080)])
def test_a_limit_duration_the_guard_cannot_count_is_refused_naming_it(admin_client, field, bound):
    """A cooldown, stale-data age or burst window read as "never" (2147483647 minutes, 4,000 years) was stored, and
    every guard cycle then failed on a date past the year 9999 or before the year 1: no account guarded."""
    from risk.models import RiskLimit

    response = admin_client.post("/admin/risk/risklimit/add/", {**LIMIT_FORM, field: "2147483647"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field] and str(bound) in errors[field][0]
    assert not RiskLimit.objects.exists()
    response = admin_client.post("/admin/risk/risklimit/add/", {**LIMIT_FORM, field: str(bound)})
    assert response.status_code == 302 and RiskLimit.objects.count() == 1


def test_an_error_burst_of_zero_errors_is_refused(admin_client):
    """'0 rejected orders or API errors in the last 10 min (limit 0)' was a burst at every cycle: the account reduced
    for good, raised again the minute after each clear (empty turns the check off)."""
    from risk.models import RiskLimit

    response = admin_client.post("/admin/risk/risklimit/add/", {**LIMIT_FORM, "error_burst_count": "0"})
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["error_burst_count"]
    assert not RiskLimit.objects.exists()
    assert admin_client.post("/admin/risk/risklimit/add/", {**LIMIT_FORM, "error_burst_count": "1"}).status_code == 302


def test_a_queue_limit_on_an_account_row_is_refused_where_the_guard_would_never_read_it(admin_client):
    """The guard and /system/ read the Celery queues' limit from the system-wide row alone (the queues serve every
    account): an account's row took 50, showed it, and the guard went on alerting at 200."""
    from risk.models import RiskLimit

    account = ExchangeAccountFactory()
    form = {**LIMIT_FORM, "account": str(account.pk), "queue_max_length": "50"}
    response = admin_client.post("/admin/risk/risklimit/add/", form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["queue_max_length"] and "system-wide row" in errors["queue_max_length"][0]
    assert not RiskLimit.objects.exists()
    assert admin_client.post("/admin/risk/risklimit/add/", {**form, "account": ""}).status_code == 302
    assert admin_client.post("/admin/risk/risklimit/add/", {**form, "queue_max_length": "200"}).status_code == 302
    assert sorted(RiskLimit.objects.values_list("account", "queue_max_length"), key=str) == sorted(
        [(None, 50), (account.pk, 200)], key=str)



def test_a_limit_changed_after_the_form_was_opened_is_not_saved_over(admin_client):
    """Two people on one limit: the second save wrote the daily loss limit its form showed over the first's."""
    import re

    from risk.models import RiskLimit

    assert admin_client.post("/admin/risk/risklimit/add/", {**LIMIT_FORM, "daily_loss_limit": "100"}).status_code == 302
    limit = RiskLimit.objects.get()
    url = f"/admin/risk/risklimit/{limit.pk}/change/"

    def opened(**edits) -> dict:
        seen = re.search(r'name="seen_updated_at" value="([^"]*)"', admin_client.get(url).text)
        return {**LIMIT_FORM, "daily_loss_limit": "100", "seen_updated_at": seen.group(1) if seen else "", **edits}

    first, second = opened(daily_loss_limit="50"), opened(max_open_trades="4")
    assert admin_client.post(url, first).status_code == 302
    response = admin_client.post(url, second)
    assert response.status_code == 200
    assert "changed by someone else" in response.context["adminform"].form.non_field_errors()[0]
    limit.refresh_from_db()
    assert (limit.daily_loss_limit, limit.max_open_trades) == (50, None)
