"""The pairs' API (pairs/api.py): what a reporting tool reads of the pairs' statistics."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from pairs.models import PairStatistics
from tests.factories import LevelFactory, PairFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(django_user_model):
    user = django_user_model.objects.create_user("report", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="reporting"))
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_an_unbounded_profit_factor_is_told_from_an_undefined_one(api, client, django_user_model):
    # Both are stored as null: all wins (the best validation a pair can show) and no trade at all. The API gave a
    # reporting tool no way to tell them apart, and the dashboard's ladder and pair page showed an empty cell.
    pair = PairFactory(level=LevelFactory(number=1))
    common = {"pair": pair, "profit_factor": None}
    PairStatistics.objects.create(window=PairStatistics.Window.VALIDATION, trades=8, win_rate=1.0, **common)
    PairStatistics.objects.create(window=PairStatistics.Window.LIVE, trades=0, win_rate=None, **common)
    PairStatistics.objects.create(window=PairStatistics.Window.IN_SAMPLE, trades=3, win_rate=0.0, **common)
    rows = {r["window"]: r for r in api.get("/api/v1/pair-statistics/").json()["results"]}
    assert rows["validation"]["profit_factor"] is None and rows["validation"]["profit_factor_unbounded"] is True
    assert rows["live"]["profit_factor_unbounded"] is False and rows["in_sample"]["profit_factor_unbounded"] is False
    assert "profit_factor_unbounded" in api.get("/api/v1/pair-statistics/?format=csv").text.splitlines()[0]

    viewer = django_user_model.objects.create_user("viewer", password="a-long-test-password")
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    ladder = client.get("/").text.split('id="ladder"')[1].split("</section>")[0]
    assert "∞" in ladder
    assert "∞" in client.get(f"/pairs/{pair.pk}/").text
