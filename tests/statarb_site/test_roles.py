"""The role groups and what ``manage.py setup_roles`` says it gave them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from statarb_site.roles import roles_sync

pytestmark = pytest.mark.django_db


def test_the_counts_printed_are_the_permissions_each_group_holds():
    # monitoring.view_dashboard is named in the viewer's role and is a view_ permission of a viewed app as well: it
    # was counted twice, so setup_roles printed "viewer: 42 permission(s)" for a group holding 41.
    counts = roles_sync()
    held = {group.name: group.permissions.count() for group in Group.objects.filter(name__in=counts)}
    assert counts == held
    out = StringIO()
    call_command("setup_roles", stdout=out)
    assert f"viewer: {held['viewer']} permission(s)" in out.getvalue()
