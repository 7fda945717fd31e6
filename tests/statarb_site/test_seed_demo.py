"""The demo's seed: what it creates is audited once; a second run keeps everything and audits nothing."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from core.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_the_demo_seed_audits_what_it_creates_and_nothing_when_it_keeps(settings, tmp_path):
    settings.DEBUG, settings.VAR_DIR = True, tmp_path
    call_command("seed_demo", stdout=StringIO())
    actions = sorted(AuditEntry.objects.values_list("action", flat=True))
    assert actions == ["add_exchangeaccount", "add_risklimit", "add_user"]
    assert all("(manage.py seed_demo)" in label for label in AuditEntry.objects.values_list("actor_label", flat=True))

    call_command("seed_demo", stdout=StringIO())
    assert AuditEntry.objects.count() == 3
    (tmp_path / "demo-login.txt").unlink()  # the password is lost: a new one is set, and that is audited
    call_command("seed_demo", stdout=StringIO())
    assert AuditEntry.objects.filter(action="change_password").count() == 1
