"""The admin of the parts statarb doesn't own (statarb_site/admin.py): what its pages load under our CSP."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_periodic_task_form_runs_no_inline_script(client, django_user_model):
    # django-celery-beat's form carries an inline script (the crontab in words); the Content-Security-Policy
    # (script-src 'self') blocked it in the browser, with an error on every opening of the form.
    root = django_user_model.objects.create_superuser("root", password="a-long-test-password")
    client.force_login(root)
    page = client.get(reverse("admin:django_celery_beat_periodictask_add"))
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, flags=re.S)
    inline = [attrs for attrs, body in scripts if "src=" not in attrs and "application/json" not in attrs]
    assert inline == []
    assert 'id="readable-crontabs"' in page.text and "statarb/periodic_task_form.js" in page.text
