"""The kill switch through its commands and its API: who may, what is written, what a bad input answers."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from core.models import AuditEntry
from risk.models import Halt
from risk.selectors import active_halts
from risk.services import halt_raise
from tests.factories import ExchangeAccountFactory

pytestmark = pytest.mark.django_db


def test_the_commands_notifications_name_who_ran_them(django_capture_on_commit_callbacks):
    from notifications.models import Notification

    ExchangeAccountFactory(name="main")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("halt", "--account", "main", "--reason", "exchange outage")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("resume", "--account", "main")
    raised, cleared = (Notification.objects.get(topic=t).text for t in ("kill_switch", "kill_switch_released"))
    # The shell's operator, as the audit trail names them: not "By hand" nor "nobody (latch ended or the guard)".
    assert raised.splitlines()[-1].startswith("by: ") and raised.splitlines()[-1].endswith("(manage.py halt)")
    assert cleared.splitlines()[-1].endswith("(manage.py resume)")


def test_halt_command_halts_one_account_and_resume_clears_it(capsys):
    account = ExchangeAccountFactory(name="main")
    other = ExchangeAccountFactory(name="other")
    call_command("halt", "--account", "main", "--flatten", "--reason", "exchange outage")
    halt = Halt.objects.get()
    assert (halt.account, halt.flatten, halt.mode, halt.trigger) == (account, True, Halt.Mode.HALT, "kill_switch")
    assert "exchange outage" in halt.reason
    assert list(active_halts(account=other)) == []
    audit = AuditEntry.objects.get(action="kill_switch")
    assert audit.channel == "command" and "manage.py halt" in audit.actor_label
    call_command("resume", "--account", "main")
    assert not active_halts(account=account).exists()
    assert AuditEntry.objects.filter(action="resume").exists()


def test_halt_command_without_account_halts_everything():
    accounts = [ExchangeAccountFactory() for _ in range(3)]
    call_command("halt", "--reason", "stop everything")
    assert all(active_halts(account=a).filter(mode=Halt.Mode.HALT).exists() for a in accounts)
    call_command("resume")
    assert not any(active_halts(account=a).exists() for a in accounts)


def test_resume_leaves_the_guards_own_halts_standing():
    account = ExchangeAccountFactory(name="main")
    guard = halt_raise(account=account, source=Halt.Source.GUARD, reason="drawdown 12% > 10%",
                       mode=Halt.Mode.HALT, trigger="drawdown")
    call_command("halt", "--account", "main", "--reason", "checking")
    call_command("resume", "--account", "main")
    assert list(active_halts(account=account)) == [guard]


@pytest.mark.parametrize(("argv", "message"), [
    (["--reason", "x", "--account", "nope"], "--account nope: no such account"),
    (["--reason", "   "], "--reason must say why"),
    (["--reason", "x", "--user", "ghost"], "no user named 'ghost'"),
])
def test_halt_command_names_what_was_wrong(argv, message):
    ExchangeAccountFactory(name="main")
    with pytest.raises(CommandError, match=message):
        call_command("halt", *argv)
    assert not Halt.objects.exists()


def test_a_user_without_the_permission_can_not_halt_or_resume_through_the_commands(django_user_model):
    ExchangeAccountFactory(name="main")
    django_user_model.objects.create_user("viewer1", password="a-long-test-password").groups.add(
        Group.objects.get(name="viewer"))
    with pytest.raises(CommandError, match=r"lacks the permission execution\.halt_account"):
        call_command("halt", "--reason", "x", "--user", "viewer1")
    halt_raise(account=None, source=Halt.Source.MANUAL, reason="by hand")
    with pytest.raises(CommandError, match=r"lacks the permission risk\.clear_halt"):
        call_command("resume", "--user", "viewer1")
    assert active_halts().count() == 1
    # Each refusal is in the trail, with the user named and the shell's operator who named them.
    refused = list(AuditEntry.objects.filter(action="refused").order_by("pk"))
    assert [(e.channel, e.actor.username) for e in refused] == [("command", "viewer1")] * 2
    assert "(manage.py halt)" in refused[0].actor_label and "(manage.py resume)" in refused[1].actor_label
    assert refused[0].summary.startswith("manage.py halt for user 'viewer1' refused: user 'viewer1' lacks")


def test_a_trader_named_on_the_command_is_the_actor(django_user_model):
    ExchangeAccountFactory(name="main")
    trader = django_user_model.objects.create_user("trader1", password="a-long-test-password")
    trader.groups.add(Group.objects.get(name="trader"))
    call_command("halt", "--reason", "x", "--account", "main", "--user", "trader1")
    assert Halt.objects.get().created_by == trader
    entry = AuditEntry.objects.get(action="kill_switch")
    # --user is the operator's claim: the trail keeps who ran the command as well.
    assert entry.actor == trader and entry.actor_label.startswith("trader1 via ")
    assert entry.actor_label.endswith("(manage.py halt)")


def test_the_api_names_an_unknown_account(django_user_model):
    trader = django_user_model.objects.create_user("trader1", password="a-long-test-password")
    trader.groups.add(Group.objects.get(name="trader"))
    api = APIClient()
    api.force_authenticate(trader)
    response = api.post(reverse("api:halt"), {"reason": "x", "account": "nope"}, format="json")
    assert response.status_code == 400 and "nope" in str(response.json()["account"])
    assert api.post(reverse("api:halt"), {"account": "nope"}, format="json").json()["reason"]
    assert not Halt.objects.exists()
