"""The permission matrix: every admin action and every API write, for each role and for staff without permissions.

A user who may not run an action is not offered it, and posting it anyway changes nothing; a user who may run it
changes the state and leaves an audit entry naming them.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from knox.models import AuthToken
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from core.models import AuditEntry
from execution.models import ExchangeAccount, PairTrade
from pairs.models import Level, LevelChange, Pair
from risk.models import Halt
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    FillFactory,
    GuardEventFactory,
    HaltFactory,
    LevelFactory,
    OrderFactory,
    PairFactory,
    PairTradeFactory,
)

pytestmark = pytest.mark.django_db

USERS = ("viewer", "reporting", "trader", "admin", "staff_without_permissions")


@pytest.fixture
def users(django_user_model):
    made = {}
    for name in USERS:
        user = django_user_model.objects.create_user(username=name, password="a-long-test-password",
                                                     is_staff=name != "reporting")
        if name in ("viewer", "reporting", "trader", "admin"):
            user.groups.add(Group.objects.get(name=name))
        made[name] = user
    return made


@pytest.fixture
def world(db):
    levels = [LevelFactory(number=number) for number in (0, 1, 2)]
    pair = PairFactory(level=levels[1])
    account = ExchangeAccountFactory(level=levels[1])
    trade = PairTradeFactory(account=account, pair=pair)
    halt = HaltFactory(account=account)
    interval = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    task = PeriodicTask.objects.create(name="statistics", task="ladder.tasks.update_pair_statistics",
                                       interval=interval, enabled=True)
    return {"levels": levels, "pair": pair, "account": account, "trade": trade, "halt": halt, "task": task}


def _state(world, users) -> dict:
    """Everything any action below could change."""
    pair = Pair.objects.get(pk=world["pair"].pk)
    return {
        "pair": (pair.level_id, pair.level_locked),
        "trade": PairTrade.objects.filter(pk=world["trade"].pk).values_list("close_requested_at", flat=True)[0],
        "halts": sorted(Halt.objects.values_list("id", "cleared_at")),
        "task": PeriodicTask.objects.filter(pk=world["task"].pk).values_list("enabled", flat=True)[0],
        "tokens": AuthToken.objects.count(),
    }


# (admin changelist, action, the target's key in `world` or a user name, roles that may run it)
ADMIN_ACTIONS = [
    ("pairs_pair", "promote", "pair", {"trader", "admin"}),
    ("pairs_pair", "demote", "pair", {"trader", "admin"}),
    ("pairs_pair", "lock_level", "pair", {"trader", "admin"}),
    ("pairs_pair", "unlock_level", "pair", {"trader", "admin"}),
    ("execution_pairtrade", "close_by_hand", "trade", {"trader", "admin"}),
    ("execution_exchangeaccount", "halt_accounts", "account", {"trader", "admin"}),
    ("execution_exchangeaccount", "halt_and_flatten_accounts", "account", {"trader", "admin"}),
    ("execution_exchangeaccount", "resume_accounts", "account", {"trader", "admin"}),
    ("risk_halt", "clear", "halt", {"trader", "admin"}),
    ("django_celery_beat_periodictask", "enable_tasks", "task", {"admin"}),
    ("django_celery_beat_periodictask", "disable_tasks", "task", {"admin"}),
    ("django_celery_beat_periodictask", "toggle_tasks", "task", {"admin"}),
    ("django_celery_beat_periodictask", "run_tasks", "task", {"admin"}),
    ("auth_user", "revoke_api_tokens", "reporting", {"admin"}),
    ("pairs_level", "delete_selected", "level", {"admin"}),
]


def _target(world, users, key):
    if key in users:
        return users[key]
    if key == "level":
        return world["levels"][2]
    return world[key]


def _offered(client, changelist: str) -> set[str] | None:
    response = client.get(reverse(f"admin:{changelist}_changelist"))
    if response.status_code != 200:
        return None
    form = response.context.get("action_form")
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


@pytest.mark.parametrize(("changelist", "action", "target", "allowed"), ADMIN_ACTIONS,
                         ids=[f"{c}.{a}" for c, a, _, _ in ADMIN_ACTIONS])
@pytest.mark.parametrize("role", ("viewer", "trader", "admin", "staff_without_permissions"))
def test_admin_action_needs_its_permission(client, users, world, role, changelist, action, target, allowed,
                                           monkeypatch):
    # Running a periodic task sends it to the broker; here only whether it was asked for counts.
    sent = []
    monkeypatch.setattr("celery.app.task.Task.apply_async", lambda self, *a, **k: sent.append(self.name))
    AuthToken.objects.create(user=users["reporting"])
    if action == "unlock_level":
        Pair.objects.filter(pk=world["pair"].pk).update(level_locked=True)
    if action == "enable_tasks":
        PeriodicTask.objects.filter(pk=world["task"].pk).update(enabled=False)
    client.force_login(users[role])
    obj = _target(world, users, target)
    offered = _offered(client, changelist)
    before = _state(world, users)
    audits = AuditEntry.objects.count()

    response = client.post(reverse(f"admin:{changelist}_changelist"),
                           {"action": action, "_selected_action": [obj.pk], "post": "yes"})

    if role in allowed:
        assert action in offered
        assert response.status_code in (200, 302)
        after = _state(world, users)
        changed = after != before or sent or not type(obj).objects.filter(pk=obj.pk).exists()
        assert changed, f"{role} ran {action} but nothing changed"
        entry = AuditEntry.objects.exclude(pk__lte=audits).latest("id") if AuditEntry.objects.count() > audits \
            else None
        assert entry is not None and entry.actor == users[role] and entry.channel == "admin"
    else:
        assert offered is None or action not in offered
        assert _state(world, users) == before and not sent
        assert type(obj).objects.filter(pk=obj.pk).exists()
        assert AuditEntry.objects.count() == audits


MONEY_RECORDS = ("execution_pairtrade", "execution_order", "execution_fill", "execution_fundingpayment",
                 "risk_dailypnlsnapshot", "pairs_levelchange", "risk_guardevent", "core_auditentry")


@pytest.mark.parametrize("changelist", MONEY_RECORDS)
def test_money_records_are_read_only_even_for_a_superuser(client, django_user_model, world, changelist):
    root = django_user_model.objects.create_superuser("root", password="a-long-test-password")
    client.force_login(root)
    order = OrderFactory(trade=world["trade"])
    records = {
        "execution_pairtrade": world["trade"], "execution_order": order, "execution_fill": FillFactory(order=order),
        "risk_dailypnlsnapshot": DailyPnlSnapshotFactory(account=world["account"]),
        "risk_guardevent": GuardEventFactory(account=world["account"]),
        "pairs_levelchange": LevelChange.objects.create(pair=world["pair"], from_level=None,
                                                        to_level=world["levels"][1], reason="test"),
        "core_auditentry": AuditEntry.objects.create(actor_label="x", channel="system", action="x", summary="x"),
    }
    assert client.get(reverse(f"admin:{changelist}_add")).status_code == 403
    assert "delete_selected" not in (_offered(client, changelist) or set())
    record = records.get(changelist)
    if record is not None:
        assert client.post(reverse(f"admin:{changelist}_delete", args=[record.pk]), {"post": "yes"}).status_code \
            == 403
        assert type(record).objects.filter(pk=record.pk).exists()
        # The change page shows the record but has no form that could save it.
        page = client.get(reverse(f"admin:{changelist}_change", args=[record.pk]))
        assert page.status_code == 200 and b'name="_save"' not in page.content


def test_deleting_a_pair_keeps_its_level_history(client, django_user_model, world):
    root = django_user_model.objects.create_superuser("root", password="a-long-test-password")
    client.force_login(root)
    pair = PairFactory(level=world["levels"][0])
    LevelChange.objects.create(pair=pair, from_level=None, to_level=world["levels"][0], reason="graded")
    client.post(reverse("admin:pairs_pair_delete", args=[pair.pk]), {"post": "yes"})
    assert Pair.objects.filter(pk=pair.pk).exists()
    assert LevelChange.objects.filter(pair=pair).count() == 1


@pytest.mark.parametrize(("role", "status"), [
    ("anonymous", 401), ("viewer", 403), ("reporting", 403), ("staff_without_permissions", 403),
    ("trader", 202), ("admin", 202),
])
def test_closing_a_trade_through_the_api_needs_close_trade(users, world, role, status):
    api = APIClient()
    if role != "anonymous":
        token = AuthToken.objects.create(user=users[role])[1]
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    before = AuditEntry.objects.filter(action="close_trade").count()
    response = api.post(reverse("api:trade-close", args=[world["trade"].pk]))
    assert response.status_code == status
    trade = PairTrade.objects.get(pk=world["trade"].pk)
    if status == 202:
        assert trade.close_requested_at is not None and trade.close_requested_by == users[role]
        assert AuditEntry.objects.filter(action="close_trade", actor=users[role], channel="api").exists()
    else:
        assert trade.close_requested_at is None
        assert AuditEntry.objects.filter(action="close_trade").count() == before


@pytest.mark.parametrize(("role", "reads"), [
    ("viewer", True), ("reporting", True), ("trader", True), ("admin", True), ("staff_without_permissions", False),
])
def test_reading_the_api_needs_a_role(users, world, role, reads):
    api = APIClient()
    api.force_authenticate(users[role])
    for name in ("levels", "pairs", "accounts", "trades", "daily-pnl", "performance", "guard-events", "halts"):
        assert api.get(reverse(f"api:{name}")).status_code == (200 if reads else 403), name


@pytest.mark.parametrize(("role", "status"), [
    ("viewer", 200), ("trader", 200), ("admin", 200), ("reporting", 403), ("staff_without_permissions", 403),
])
def test_the_dashboard_needs_view_dashboard(client, users, world, role, status):
    client.force_login(users[role])
    assert client.get(reverse("dashboard")).status_code == status


def test_a_viewer_sees_the_pair_level_read_only_in_the_admin(client, users, world):
    client.force_login(users["viewer"])
    page = client.get(reverse("admin:pairs_pair_change", args=[world["pair"].pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    client.post(reverse("admin:pairs_pair_change", args=[world["pair"].pk]),
                {"level": world["levels"][2].pk, "level_locked": "on"})
    assert Pair.objects.get(pk=world["pair"].pk).level_id == world["levels"][1].pk


def test_admin_edits_of_settings_are_audited(client, users, world):
    client.force_login(users["admin"])
    level = world["levels"][2]
    page = client.get(reverse("admin:pairs_level_change", args=[level.pk]))
    data = {key: value for key, value in page.context["adminform"].form.initial.items() if value is not None}
    data["name"] = "real capital"
    response = client.post(reverse("admin:pairs_level_change", args=[level.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Level.objects.get(pk=level.pk).name == "real capital"
    entry = AuditEntry.objects.get(action="change_level")
    assert entry.actor == users["admin"] and "name" in entry.details["fields"]


def test_an_exchange_account_with_trades_is_not_deleted(client, users, world):
    client.force_login(users["admin"])
    client.post(reverse("admin:execution_exchangeaccount_delete", args=[world["account"].pk]), {"post": "yes"})
    assert ExchangeAccount.objects.filter(pk=world["account"].pk).exists()


def test_unlocking_a_locked_out_user_needs_the_delete_permission_and_is_audited(client, users):
    from axes.models import AccessAttempt, AccessLog

    attempt = AccessAttempt.objects.create(username="victim", ip_address="10.0.0.1", user_agent="x", get_data="",
                                           post_data="", http_accept="", path_info="/admin/login/",
                                           failures_since_start=50)
    AccessLog.objects.create(username="victim", ip_address="10.0.0.1", user_agent="x", http_accept="",
                             path_info="/admin/login/")
    for role in ("viewer", "trader", "staff_without_permissions"):
        client.force_login(users[role])
        client.post(reverse("admin:axes_accessattempt_changelist"),
                    {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})
        assert AccessAttempt.objects.filter(pk=attempt.pk).exists(), role
    client.force_login(users["admin"])
    assert "delete_selected" not in (_offered(client, "axes_accesslog") or set())  # the log of logins stays
    client.post(reverse("admin:axes_accessattempt_changelist"),
                {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})
    assert not AccessAttempt.objects.filter(pk=attempt.pk).exists()
    assert AuditEntry.objects.filter(action="delete_accessattempt", actor=users["admin"]).exists()


@pytest.mark.parametrize(("role", "status"), [
    ("anonymous", 401), ("viewer", 403), ("reporting", 403), ("staff_without_permissions", 403),
    ("trader", 201), ("admin", 201),
])
def test_the_kill_switch_over_the_api_needs_halt_account(users, world, role, status):
    api = APIClient()
    if role != "anonymous":
        token = AuthToken.objects.create(user=users[role])[1]
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    halts = Halt.objects.count()
    response = api.post(reverse("api:halt"), {"reason": "exchange outage", "flatten": True}, format="json")
    assert response.status_code == status
    if status == 201:
        halt = Halt.objects.get(pk=response.json()["id"])
        assert halt.account is None and halt.flatten and halt.mode == Halt.Mode.HALT and halt.created_by == users[role]
        assert AuditEntry.objects.filter(action="kill_switch", actor=users[role], channel="api").exists()
        # Resuming needs risk.clear_halt, which the trader and the admin hold.
        assert api.post(reverse("api:resume"), {}, format="json").json() == {"cleared": 1}
        assert not Halt.objects.get(pk=halt.pk).is_active
    else:
        assert Halt.objects.count() == halts
        assert api.post(reverse("api:resume"), {}, format="json").status_code == status
        assert Halt.objects.get(pk=world["halt"].pk).is_active


def test_changing_a_roles_permissions_in_the_admin_is_audited_with_what_it_granted(client, django_user_model):
    from django.contrib.auth.models import Permission

    superuser = django_user_model.objects.create_superuser(username="root-admin", password="a-long-test-password")
    client.force_login(superuser)
    viewer = Group.objects.get(name="viewer")
    kept = sorted(viewer.permissions.values_list("pk", flat=True))
    halt = Permission.objects.get(content_type__app_label="execution", codename="halt_account")
    response = client.post(reverse("admin:auth_group_change", args=[viewer.pk]),
                           {"name": "viewer", "permissions": [*kept, halt.pk]})
    assert response.status_code == 302
    assert viewer.permissions.filter(pk=halt.pk).exists()
    entry = AuditEntry.objects.get(action="grant_group_permissions")
    assert entry.actor == superuser and entry.target_id == str(viewer.pk)
    assert entry.details == {"field": "permissions", "added": ["execution.halt_account"], "removed": []}
    assert AuditEntry.objects.filter(action="change_group").exists()

    client.post(reverse("admin:auth_group_add"), {"name": "desk", "permissions": [halt.pk]})
    desk = Group.objects.get(name="desk")
    added = AuditEntry.objects.filter(action="grant_group_permissions", target_id=str(desk.pk))
    assert added.get().details["added"] == ["execution.halt_account"]


def test_adding_a_user_to_a_role_in_the_admin_is_audited_with_the_role(client, django_user_model, users):
    superuser = django_user_model.objects.create_superuser(username="root-admin", password="a-long-test-password")
    client.force_login(superuser)
    viewer = users["viewer"]
    page = client.get(reverse("admin:auth_user_change", args=[viewer.pk]))
    form = page.context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update(groups=[Group.objects.get(name="trader").pk, *viewer.groups.values_list("pk", flat=True)],
                user_permissions=[], date_joined_0=viewer.date_joined.strftime("%Y-%m-%d"),
                date_joined_1=viewer.date_joined.strftime("%H:%M:%S"), is_staff="on", is_active="on")
    data.pop("date_joined", None)
    data.pop("last_login", None)
    response = client.post(reverse("admin:auth_user_change", args=[viewer.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    entry = AuditEntry.objects.get(action="grant_user_groups")
    assert entry.details["added"] == ["trader"] and entry.details["removed"] == []


def test_a_user_changing_their_own_password_in_the_admin_is_audited(client, users):
    # Django's page left no trace: a stolen session could change its owner's password, locking them out, unseen.
    viewer = users["viewer"]
    client.force_login(viewer)
    page = client.get(reverse("admin:password_change"))
    assert page.status_code == 200 and b"old_password" in page.content
    wrong = client.post(reverse("admin:password_change"), {"old_password": "not-it", "new_password1": "x-Ray-77-tango",
                                                          "new_password2": "x-Ray-77-tango"})
    assert wrong.status_code == 200 and not AuditEntry.objects.filter(action="change_password").exists()
    response = client.post(reverse("admin:password_change"), {
        "old_password": "a-long-test-password", "new_password1": "x-Ray-77-tango", "new_password2": "x-Ray-77-tango"})
    assert response.status_code == 302
    viewer.refresh_from_db()
    assert viewer.check_password("x-Ray-77-tango")
    entry = AuditEntry.objects.get(action="change_password")
    assert entry.actor == viewer and entry.channel == "admin" and entry.target_id == str(viewer.pk)
    assert "x-Ray-77-tango" not in entry.summary and "x-Ray-77-tango" not in str(entry.details)


def test_the_own_password_page_still_needs_a_staff_login(client, django_user_model):
    assert client.get(reverse("admin:password_change")).status_code == 302  # to the admin's login
    client.force_login(django_user_model.objects.create_user("plain", password="a-long-test-password"))
    response = client.post(reverse("admin:password_change"), {
        "old_password": "a-long-test-password", "new_password1": "x-Ray-77-tango", "new_password2": "x-Ray-77-tango"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert django_user_model.objects.get(username="plain").check_password("a-long-test-password")


def test_running_a_task_the_workers_do_not_know_is_not_audited_as_run(client, users, world, monkeypatch):
    # django-celery-beat's action sends nothing when one selected task is unknown (renamed, its app removed); the
    # trail said it had been run all the same.
    sent = []
    monkeypatch.setattr("celery.app.task.Task.apply_async", lambda self, *a, **k: sent.append(self.name))
    gone = PeriodicTask.objects.create(name="gone", task="nowhere.tasks.gone", interval=world["task"].interval)
    client.force_login(users["admin"])
    response = client.post(reverse("admin:django_celery_beat_periodictask_changelist"),
                           {"action": "run_tasks", "_selected_action": [world["task"].pk, gone.pk]}, follow=True)
    assert 'task "nowhere.tasks.gone" not found' in [str(message) for message in response.context["messages"]]
    assert sent == [] and not AuditEntry.objects.filter(action="run_periodic_task").exists()


def test_a_task_the_broker_refuses_to_take_is_not_audited_as_run(client, users, world, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OperationalError("broker down")

    monkeypatch.setattr("celery.app.task.Task.apply_async", refuse)
    client.raise_request_exception = False
    client.force_login(users["admin"])
    response = client.post(reverse("admin:django_celery_beat_periodictask_changelist"),
                           {"action": "run_tasks", "_selected_action": [world["task"].pk]})
    assert response.status_code == 500
    assert not AuditEntry.objects.filter(action="run_periodic_task").exists()


@pytest.fixture
def password_page(client, django_user_model, users):
    client.force_login(django_user_model.objects.create_superuser("root-admin", password="a-long-test-password"))
    return reverse("admin:auth_user_password_change", args=[users["viewer"].pk])


def test_a_password_set_in_the_admin_is_not_kept_without_its_audit(client, users, password_page, monkeypatch):
    # Django saved the password before logging it (where it is audited), outside a transaction: a failing audit left
    # the new password in force with no trace of who set it.
    def broken(**kwargs):
        raise RuntimeError("the audit could not be written")

    monkeypatch.setattr("statarb_site.admin.audit_record", broken)
    client.raise_request_exception = False
    response = client.post(password_page, {"password1": "x-Ray-77-tango", "password2": "x-Ray-77-tango",
                                           "usable_password": "true"})
    assert response.status_code == 500
    assert users["viewer"].__class__.objects.get(pk=users["viewer"].pk).check_password("a-long-test-password")


def test_disabling_a_users_password_login_is_audited_as_such(client, users, password_page):
    response = client.post(password_page, {"usable_password": "false", "unset-password": "1"})
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="change_password")
    assert entry.summary == "password-based login of viewer disabled"
