"""Django's and django-axes' state-changing commands, overridden in core (core/command_audit.py): each does what it
did and leaves an audit entry; changepassword also revokes the user's API tokens; flush is refused on production."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken

from core.management.commands import changepassword
from core.models import AuditEntry

pytestmark = pytest.mark.django_db

PASSWORD = "x-Ray-77-tango-Foxtrot"


@pytest.mark.parametrize("name", ["createsuperuser", "changepassword", "axes_reset", "axes_reset_ip",
                                  "axes_reset_username", "axes_reset_ip_username", "axes_reset_logs",
                                  "axes_reset_failure_logs", "clearsessions", "remove_stale_contenttypes",
                                  "loaddata", "flush"])
def test_the_state_changing_commands_of_django_and_axes_are_ours(name):
    # manage.py runs the command of the first app in INSTALLED_APPS that has one: Django's and axes' own changed
    # users, passwords, lock-outs and sessions with nothing on the audit trail.
    assert get_commands()[name] == "core"


def test_createsuperuser_is_audited_without_the_password(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.com")
    entry = AuditEntry.objects.get(action="add_user")
    assert entry.channel == "command" and "(manage.py createsuperuser)" in entry.actor_label
    assert entry.summary == "superuser boss created by manage.py createsuperuser"
    assert entry.target_type == "auth.User" and entry.details["user"] == "boss"
    assert "--username=boss" in entry.details["arguments"]
    assert PASSWORD not in str(entry.summary) + json.dumps(entry.details)


def test_createsuperuser_asks_as_djangos_and_audits_the_user_it_creates(monkeypatch, django_user_model):
    # The questions (user name checked against the stored ones, e-mail, password twice, validated) go through the
    # audited user model as through Django's.
    from django.contrib.auth.management.commands import createsuperuser

    django_user_model.objects.create_user("taken", password="a-long-test-password")
    answers = iter(["taken", "boss", "boss@example.com", "N"])  # N: no bypass of the password validation
    passwords = iter(["short", "short", PASSWORD, PASSWORD])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr(createsuperuser.getpass, "getpass", lambda prompt="": next(passwords))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    errors = StringIO()
    call_command("createsuperuser", stdout=StringIO(), stderr=errors)
    assert "That username is already taken." in errors.getvalue() and "too short" in errors.getvalue()
    boss = django_user_model.objects.get(username="boss")
    assert boss.is_superuser and boss.check_password(PASSWORD)
    assert AuditEntry.objects.get(action="add_user").target_id == str(boss.pk)


def test_a_superuser_is_not_created_without_its_audit(monkeypatch, django_user_model):
    def broken(**kwargs):
        raise RuntimeError("the audit could not be written")

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    monkeypatch.setattr("core.command_audit.audit_record", broken)
    with pytest.raises(RuntimeError):
        call_command("createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.com")
    assert not django_user_model.objects.filter(username="boss").exists()


@pytest.fixture
def typed(monkeypatch):
    """What the person types at changepassword's prompts."""
    answers: list[str] = []
    monkeypatch.setattr(changepassword.Command, "_get_pass", lambda self, prompt="": answers.pop(0))
    return answers


def test_changepassword_is_audited_and_revokes_the_users_api_tokens(typed, django_user_model):
    user = django_user_model.objects.create_superuser("trader", password="a-long-test-password")
    other = django_user_model.objects.create_user("other", password="a-long-test-password")
    for owner in (user, user, other):
        AuthToken.objects.create(user=owner, expiry=timedelta(days=30))
    session = Client()
    session.force_login(user)
    assert session.get(reverse("dashboard")).status_code == 200
    typed.extend(["short", "mismatch", PASSWORD, PASSWORD])
    call_command("changepassword", "trader")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert session.get(reverse("dashboard")).status_code == 302  # the session is over (Django's session hash)
    assert not AuthToken.objects.filter(user=user).exists() and AuthToken.objects.filter(user=other).count() == 1
    change = AuditEntry.objects.get(action="change_password")
    assert change.channel == "command" and "(manage.py changepassword)" in change.actor_label
    assert change.summary == "password of trader changed" and change.target_id == str(user.pk)
    revoked = AuditEntry.objects.get(action="revoke_api_tokens")
    assert revoked.summary == "2 API token(s) of trader revoked: password of trader changed"
    assert len(revoked.details["token_keys"]) == 2
    assert PASSWORD not in "".join(entry.summary + json.dumps(entry.details) for entry in AuditEntry.objects.all())


def test_changepassword_keeps_djangos_refusals(typed, django_user_model):
    user = django_user_model.objects.create_user("trader", password="a-long-test-password")
    typed.extend(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(CommandError, match="Aborting password change for user 'trader' after 3 attempts"):
        call_command("changepassword", "trader")
    with pytest.raises(CommandError, match="user 'nobody' does not exist"):
        call_command("changepassword", "nobody")
    user.refresh_from_db()
    assert user.check_password("a-long-test-password") and not AuditEntry.objects.exists()


def test_a_password_is_not_changed_by_the_command_without_its_audit(typed, monkeypatch, django_user_model):
    def broken(**kwargs):
        raise RuntimeError("the audit could not be written")

    user = django_user_model.objects.create_user("trader", password="a-long-test-password")
    AuthToken.objects.create(user=user, expiry=timedelta(days=30))
    monkeypatch.setattr("core.management.commands.changepassword.audit_record", broken)
    typed.extend([PASSWORD, PASSWORD])
    with pytest.raises(RuntimeError):
        call_command("changepassword", "trader")
    user.refresh_from_db()
    assert user.check_password("a-long-test-password") and AuthToken.objects.filter(user=user).exists()


def _attempt(ip: str, username: str) -> AccessAttempt:
    return AccessAttempt.objects.create(ip_address=ip, username=username, user_agent="test", failures_since_start=9,
                                        get_data="", post_data="", http_accept="*/*", path_info="/admin/login/")


@pytest.mark.parametrize(("arguments", "removed", "left"), [
    (["axes_reset"], 2, 0),
    (["axes_reset_ip", "10.0.0.1"], 1, 1),
    (["axes_reset_username", "trader"], 1, 1),
    (["axes_reset_ip_username", "10.0.0.1", "trader"], 1, 1),
])
def test_an_axes_reset_is_audited_with_the_lock_outs_it_removed(arguments, removed, left):
    _attempt("10.0.0.1", "trader")
    _attempt("10.0.0.2", "viewer")
    call_command(*arguments)
    assert AccessAttempt.objects.count() == left
    entry = AuditEntry.objects.get(action=arguments[0])
    assert entry.channel == "command" and f"(manage.py {arguments[0]})" in entry.actor_label
    assert entry.details["rows_removed"] == removed
    assert entry.summary.startswith(f"manage.py {arguments[0]}")
    assert entry.summary.endswith(f"login lock-outs reset ({removed} row(s) removed)")
    for value in arguments[1:]:
        assert value in entry.summary


def test_a_failing_audit_takes_the_axes_reset_back(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("the audit could not be written")

    _attempt("10.0.0.1", "trader")
    monkeypatch.setattr("core.command_audit.audit_record", broken)
    with pytest.raises(RuntimeError):
        call_command("axes_reset")
    assert AccessAttempt.objects.count() == 1


@pytest.mark.parametrize(("command", "model"), [("axes_reset_logs", AccessLog),
                                                ("axes_reset_failure_logs", AccessFailureLog)])
def test_deleting_the_login_history_is_audited(command, model):
    row = model.objects.create(ip_address="10.0.0.1", username="trader", user_agent="test", http_accept="*/*",
                               path_info="/admin/login/")
    model.objects.filter(pk=row.pk).update(attempt_time=timezone.now() - timedelta(days=40))
    call_command(command, "--age", "30")
    assert not model.objects.exists()
    entry = AuditEntry.objects.get(action=command)
    assert entry.details["rows_removed"] == 1 and "--age=30" in entry.details["arguments"]


def test_clearsessions_is_audited():
    expired = SessionStore()
    expired.set_expiry(-60)
    expired.create()
    SessionStore().create()
    call_command("clearsessions")
    assert Session.objects.count() == 1
    entry = AuditEntry.objects.get(action="clearsessions")
    assert entry.summary == "manage.py clearsessions: expired sessions deleted (1 row(s) removed)"


def test_remove_stale_contenttypes_is_audited():
    ContentType.objects.create(app_label="core", model="gone")
    call_command("remove_stale_contenttypes", "--noinput")
    assert not ContentType.objects.filter(app_label="core", model="gone").exists()
    assert AuditEntry.objects.get(action="remove_stale_contenttypes").details["rows_removed"] == 1


def test_remove_stale_contenttypes_asked_on_the_terminal_is_audited_once_it_deleted(monkeypatch):
    # Asking, it runs outside a transaction (SQLite's write lock is not held while a person reads the question);
    # its entry follows the deletion, and a "no" leaves none.
    ContentType.objects.create(app_label="core", model="gone")
    answers = iter(["no", "yes"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    call_command("remove_stale_contenttypes", stdout=StringIO())
    assert ContentType.objects.filter(app_label="core", model="gone").exists() and not AuditEntry.objects.exists()
    call_command("remove_stale_contenttypes", stdout=StringIO())
    assert not ContentType.objects.filter(app_label="core", model="gone").exists()
    assert AuditEntry.objects.get(action="remove_stale_contenttypes").details["rows_removed"] == 1


def test_loaddata_is_audited_with_what_it_loaded(tmp_path):
    fixture = tmp_path / "roles.json"
    fixture.write_text(json.dumps([{"model": "auth.group", "fields": {"name": "night-desk", "permissions": []}}]))
    call_command("loaddata", str(fixture))
    assert Group.objects.filter(name="night-desk").exists()
    entry = AuditEntry.objects.get(action="loaddata")
    assert entry.details["objects_loaded"] == 1 and str(fixture) in entry.details["arguments"]
    assert entry.summary.endswith("1 object(s) loaded from 1 fixture(s)") and entry.details["models"] == ["auth.Group"]


def test_loaddata_refuses_fixtures_that_rewrite_the_audit_trail(tmp_path):
    # A fixture writes rows by primary key: audit entries in it rewrote who did what, over the stored ones.
    first = AuditEntry.objects.create(actor_label="root", channel="admin", action="clear_halt", summary="cleared")
    fixture = tmp_path / "history.json"
    fixture.write_text(json.dumps([
        {"model": "auth.group", "fields": {"name": "night-desk", "permissions": []}},
        {"model": "core.auditentry", "pk": first.pk, "fields": {
            "created_at": "2026-01-01T00:00:00Z", "actor_label": "someone-else", "channel": "admin",
            "action": "clear_halt", "summary": "cleared", "details": {}}}]))
    with pytest.raises(CommandError, match=r"the fixtures hold audit entries \(core.AuditEntry\).*nothing was loaded"):
        call_command("loaddata", str(fixture))
    first.refresh_from_db()
    assert first.actor_label == "root" and not Group.objects.filter(name="night-desk").exists()
    refusal = AuditEntry.objects.get(action="refused")
    assert "(manage.py loaddata)" in refusal.actor_label and refusal.summary.startswith("manage.py loaddata ")
    call_command("loaddata", str(fixture), "--exclude", "core.AuditEntry")
    assert Group.objects.filter(name="night-desk").exists()


def test_flush_is_refused_and_audited_where_the_settings_refuse_it(settings, django_user_model):
    settings.STATARB_REFUSE_FLUSH = True
    django_user_model.objects.create_user("trader", password="a-long-test-password")
    with pytest.raises(CommandError, match="flush is refused on this database"):
        call_command("flush", "--noinput")
    assert django_user_model.objects.filter(username="trader").exists()
    entry = AuditEntry.objects.get(action="refused")
    assert "(manage.py flush)" in entry.actor_label and "STATARB_REFUSE_FLUSH" in entry.summary
