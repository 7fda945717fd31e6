"""A limit of 0 open trades stops entries; an account row can't loosen a system-wide action; a halt added in the
admin is raised like every other (notified and audited once)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from core.models import AuditEntry
from execution.models import Signal
from notifications.models import Notification
from risk.models import Halt, RiskLimit
from risk.policy import DEFAULT_ACTIONS, HALT, HALT_FLATTEN, NOTIFY, REDUCE, merge_limits
from risk.selectors import limits_for
from tests.execution.bot_world import BotWorld
from tests.factories import RiskLimitFactory

pytestmark = pytest.mark.django_db


def test_max_open_trades_zero_stops_new_entries():
    world = BotWorld()
    RiskLimitFactory(account=world.account, daily_loss_limit=None, max_open_trades=0)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    report = world.tick()
    assert world.trades() == []
    assert any("limit 0" in line for line in report.skipped)


def test_a_system_wide_max_open_trades_of_zero_stops_new_entries_too():
    world = BotWorld()
    RiskLimit.objects.create(account=None, max_open_trades=0)
    RiskLimitFactory(account=world.account, daily_loss_limit=None, max_open_trades=3)
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    assert world.trades() == []


def test_an_account_row_action_cannot_loosen_the_system_wide_default():
    world = BotWorld()
    RiskLimit.objects.create(account=None, daily_loss_limit=Decimal("100"))  # daily_loss: halt, by default
    RiskLimit.objects.create(account=world.account, daily_loss_limit=Decimal("300"), actions={"daily_loss": NOTIFY})
    limits = limits_for(world.account)
    assert limits.action("daily_loss") == HALT
    assert limits.daily_loss_limit == Decimal("100")  # the limit values keep their own strictest rule


def test_an_account_row_action_may_tighten_the_system_wide_default():
    world = BotWorld()
    RiskLimit.objects.create(account=None, daily_loss_limit=Decimal("100"))
    RiskLimit.objects.create(account=world.account, actions={"daily_loss": HALT_FLATTEN})
    assert limits_for(world.account).action("daily_loss") == HALT_FLATTEN


def test_the_strictest_explicit_action_wins_and_a_lone_row_sets_its_own():
    def row(**actions):
        return SimpleNamespace(actions=actions)

    both = merge_limits([row(gross_exposure=HALT), row(gross_exposure=NOTIFY, slippage=REDUCE)])
    assert both.action("gross_exposure") == HALT and both.action("slippage") == REDUCE
    # One row alone (no system-wide row) may choose a milder action than the default.
    assert merge_limits([row(daily_loss=NOTIFY)]).action("daily_loss") == NOTIFY
    assert merge_limits([]).actions == DEFAULT_ACTIONS
    # An action the model would refuse counts as the default, so it can't loosen either.
    assert merge_limits([row(daily_loss="nothing")]).action("daily_loss") == HALT


@pytest.fixture
def halt_adder(client, django_user_model):
    """A staff user allowed to raise halts (and flatten: execution.halt_account) and nothing else of the risk app."""
    user = django_user_model.objects.create_user(username="desk", password="a-long-test-password", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="risk", codename="add_halt"),
                              Permission.objects.get(content_type__app_label="execution", codename="halt_account"))
    client.force_login(user)
    client.user = user
    return client


def _add_halt(client, account, reason):
    return client.post(reverse("admin:risk_halt_add"), {
        "account": account.pk, "reason": reason, "mode": Halt.Mode.HALT, "flatten": "on", "until_0": "", "until_1": "",
    })


def test_a_halt_added_in_the_admin_is_notified_and_audited_once(halt_adder, django_capture_on_commit_callbacks):
    world = BotWorld()
    with django_capture_on_commit_callbacks(execute=True):
        response = _add_halt(halt_adder, world.account, "desk stop")
    assert response.status_code == 302
    halt = Halt.objects.get(reason="desk stop")
    assert (halt.source, halt.mode, halt.flatten, halt.created_by) == (Halt.Source.MANUAL, Halt.Mode.HALT, True,
                                                                      halt_adder.user)
    note = Notification.objects.get(topic="halt_raised")
    assert "reason: desk stop" in note.text and "by: desk" in note.text
    entry = AuditEntry.objects.get(action="raise_halt")
    assert (entry.channel, entry.actor, entry.target_id) == ("admin", halt_adder.user, str(halt.pk))


def test_an_identical_halt_added_again_in_the_admin_reuses_the_one_in_force(halt_adder,
                                                                             django_capture_on_commit_callbacks):
    world = BotWorld()
    with django_capture_on_commit_callbacks(execute=True):
        _add_halt(halt_adder, world.account, "desk stop")
        response = _add_halt(halt_adder, world.account, "desk stop")
    assert response.status_code == 302
    assert Halt.objects.filter(reason="desk stop").count() == 1
    assert Notification.objects.filter(topic="halt_raised").count() == 1


def test_the_admin_refuses_a_halt_without_the_permission(client, django_user_model):
    world = BotWorld()
    user = django_user_model.objects.create_user(username="viewer", password="a-long-test-password", is_staff=True)
    client.force_login(user)
    response = _add_halt(client, world.account, "not allowed")
    assert response.status_code == 403
    assert not Halt.objects.exists() and not AuditEntry.objects.filter(action="raise_halt").exists()


def test_a_halt_whose_end_is_already_past_is_refused_in_the_admin(halt_adder):
    world = BotWorld()
    response = halt_adder.post(reverse("admin:risk_halt_add"), {
        "account": world.account.pk, "reason": "too late", "mode": Halt.Mode.HALT, "until_0": "2020-01-01",
        "until_1": "00:00:00",
    })
    assert response.status_code == 200
    assert "is already past" in str(response.context["adminform"].form.errors["until"])
    assert not Halt.objects.filter(reason="too late").exists()
