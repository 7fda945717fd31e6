"""A changed password or a deactivated user ends the user's API tokens (knox) and other sessions, on every path:
the admin's password page (someone else's, one's own), the user form's *Active*, the demo seed (changepassword:
tests/core/test_audited_commands.py). Before, a person who changed a compromised password kept every token alive."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

from core.models import AuditEntry
from core.tokens import api_token_create

pytestmark = pytest.mark.django_db

OLD, NEW = "a-long-test-password", "x-Ray-77-tango-Foxtrot"


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("viewer", password=OLD, is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    return user


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root-admin", password=OLD)
    client.force_login(user)
    return user


def _token(user) -> str:
    return api_token_create(user=user, days=30, channel="command", actor_label="test")[1]


def _api_answers(token: str) -> int:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return api.get(reverse("api:levels")).status_code


def _session_of(user) -> Client:
    other = Client()
    other.force_login(user)
    assert other.get(reverse("dashboard")).status_code == 200
    return other


def _ended(session: Client) -> bool:
    response = session.get(reverse("dashboard"))
    return response.status_code == 302 and reverse("login") in response["Location"]


def test_a_password_set_in_the_admin_revokes_the_users_tokens_and_ends_their_sessions(client, root, viewer):
    token, kept = _token(viewer), _token(root)
    assert _api_answers(token) == 200
    session = _session_of(viewer)
    response = client.post(reverse("admin:auth_user_password_change", args=[viewer.pk]),
                           {"password1": NEW, "password2": NEW, "usable_password": "true"})
    assert response.status_code == 302
    assert _api_answers(token) == 401 and not AuthToken.objects.filter(user=viewer).exists()
    assert _api_answers(kept) == 200
    assert _ended(session)
    entry = AuditEntry.objects.get(action="revoke_api_tokens", target_id=str(viewer.pk))
    assert entry.actor == root and entry.channel == "admin"
    assert entry.summary == "1 API token(s) of viewer revoked: password of viewer changed"
    assert token not in entry.summary + str(entry.details)


def test_changing_ones_own_password_revokes_ones_tokens_and_other_sessions(client, viewer):
    token = _token(viewer)
    elsewhere = _session_of(viewer)
    client.force_login(viewer)
    response = client.post(reverse("admin:password_change"),
                           {"old_password": OLD, "new_password1": NEW, "new_password2": NEW})
    assert response.status_code == 302
    assert _api_answers(token) == 401
    assert _ended(elsewhere) and client.get(reverse("dashboard")).status_code == 200  # this session is kept
    entry = AuditEntry.objects.get(action="revoke_api_tokens")
    assert entry.actor == viewer and entry.summary.endswith(": viewer changed their own password")


def _user_form_data(client, user) -> dict:
    form = client.get(reverse("admin:auth_user_change", args=[user.pk])).context["adminform"].form
    data = {key: value for key, value in form.initial.items()
            if value is not None and key not in ("password", "date_joined", "last_login", "groups",
                                                 "user_permissions")}
    data.update(groups=list(user.groups.values_list("pk", flat=True)), user_permissions=[],
                date_joined_0=user.date_joined.strftime("%Y-%m-%d"),
                date_joined_1=user.date_joined.strftime("%H:%M:%S"))
    for flag in ("is_active", "is_staff", "is_superuser"):
        data.pop(flag, None)
        if getattr(user, flag):
            data[flag] = "on"
    return data


def test_deactivating_a_user_in_the_admin_revokes_their_tokens(client, root, viewer):
    token = _token(viewer)
    data = _user_form_data(client, viewer)
    data["first_name"] = "Vera"
    assert client.post(reverse("admin:auth_user_change", args=[viewer.pk]), data).status_code == 302
    assert AuthToken.objects.filter(user=viewer).exists()  # an edit that leaves the user active keeps them
    session = _session_of(viewer)
    data.pop("is_active")
    response = client.post(reverse("admin:auth_user_change", args=[viewer.pk]), data)
    assert response.status_code == 302
    viewer.refresh_from_db()
    assert not viewer.is_active and not AuthToken.objects.filter(user=viewer).exists()
    assert _ended(session)
    entry = AuditEntry.objects.get(action="revoke_api_tokens")
    assert entry.actor == root and entry.summary == "1 API token(s) of viewer revoked: viewer deactivated"
    # Active again, the user's old token stays dead (knox only refused it while the user was inactive).
    data["is_active"] = "on"
    assert client.post(reverse("admin:auth_user_change", args=[viewer.pk]), data).status_code == 302
    assert _api_answers(token) == 401


def test_a_password_change_without_tokens_adds_no_revocation_entry(client, root, viewer):
    client.post(reverse("admin:auth_user_password_change", args=[viewer.pk]),
                {"password1": NEW, "password2": NEW, "usable_password": "true"})
    assert AuditEntry.objects.filter(action="change_password").count() == 1
    assert not AuditEntry.objects.filter(action="revoke_api_tokens").exists()


def test_a_new_demo_password_revokes_the_demo_logins_tokens(settings, tmp_path):
    settings.DEBUG, settings.VAR_DIR = True, tmp_path
    call_command("seed_demo", stdout=StringIO())
    from django.contrib.auth import get_user_model

    demo = get_user_model().objects.get(username="demo")
    AuthToken.objects.create(user=demo, expiry=timedelta(days=30))
    (tmp_path / "demo-login.txt").unlink()
    call_command("seed_demo", stdout=StringIO())
    assert not AuthToken.objects.filter(user=demo).exists()
    assert AuditEntry.objects.get(action="revoke_api_tokens").summary.endswith("demo login demo given a new password")
