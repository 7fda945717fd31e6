"""The workers part of ``/health/``: each shared queue and each enabled account's queue needs a live worker, asked
by a broadcast to the real workers over Redis (the embedded broker can't be asked: "unknown")."""

from __future__ import annotations

import pytest
from django.conf import settings

from monitoring.guard.live import WATCHED_QUEUES
from statarb_site.celery import app as celery_app
from statarb_site.worker_check import expected_queues, workers_cache_clear, workers_check
from tests.factories import ExchangeAccountFactory
from tests.statarb_site.test_celery_worker import start_worker

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
needs_redis = pytest.mark.skipif(not settings.BROKER_IS_REDIS, reason="broadcast needs the Redis broker (the "
                                 "MariaDB + Redis run of .ci/run)")


@pytest.fixture(autouse=True)
def fresh_answers():
    workers_cache_clear()
    yield
    workers_cache_clear()


def test_the_queues_expected_are_the_shared_ones_and_each_enabled_accounts():
    on = ExchangeAccountFactory()
    ExchangeAccountFactory(enabled=False)
    assert expected_queues() == [*WATCHED_QUEUES, on.queue_name]


def test_the_embedded_broker_cannot_be_asked(settings):
    settings.BROKER_IS_REDIS = False
    assert workers_check(celery_app) == {"status": "unknown"}


@needs_redis
@pytest.mark.worker
def test_health_names_each_queue_without_a_worker_until_every_queue_has_one(client):
    account = ExchangeAccountFactory()
    everything = [*WATCHED_QUEUES, account.queue_name]
    with start_worker("risk"):
        data = client.get("/health/").json()
        assert data["checks"]["workers"] == {"status": "missing", "queues": 6,
                                             "missing": [q for q in everything if q != "risk"]}
        assert data["status"] == "degraded"
        assert client.get("/health/", {"strict": "1"}).status_code == 503
    workers_cache_clear()
    with start_worker(",".join(everything)):
        assert workers_check(celery_app) == {"status": "ok", "queues": 6, "missing": []}
    workers_cache_clear()
    # stopped: nobody serves any queue any more
    assert workers_check(celery_app)["missing"] == everything
