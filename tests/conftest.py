"""Fixtures shared by the whole suite. The suite runs on whatever DATABASE_URL and CELERY_BROKER_URL name."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SHARED_CANDLES_DIR = SHARED_DIR / "data" / "binance-usdt-1h-2021"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def shared_candles_dir() -> Path:
    """The real candles at ../shared, read in place. Missing data skips locally and fails in CI."""
    if not SHARED_CANDLES_DIR.is_dir():
        message = f"shared candle data not found at {SHARED_CANDLES_DIR}"
        if running_in_ci():
            pytest.fail(message + " (CI=true: missing shared data is a failure)")
        pytest.skip(message)
    return SHARED_CANDLES_DIR


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="trader", password="a-long-test-password", is_staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def api_client(staff_client):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff_client.user)
    return api


@pytest.fixture
def secrets_key(settings):
    from cryptography.fernet import Fernet

    settings.STATARB_SECRETS_KEY = Fernet.generate_key().decode()
    return settings.STATARB_SECRETS_KEY


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch):
    """Fail any connection that is not to this machine: no test may reach a real exchange or any other host. Names
    are refused before they are resolved too: the resolver is another host, and asking it for an exchange's name is
    already traffic off this machine."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK_HOSTS:
            raise AssertionError(f"test tried to reach {address!r}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK_HOSTS:
            raise AssertionError(f"test tried to resolve {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture
def retry_sleeps(monkeypatch) -> list[float]:
    """No real waiting between exchange retries: record the delays instead (call_with_retry's ``sleep``)."""
    from exchanges.retry import call_with_retry

    sleeps: list[float] = []
    monkeypatch.setitem(call_with_retry.__kwdefaults__, "sleep", sleeps.append)
    return sleeps


# A MariaDB database and a Redis db of their own for tests that start a whole cluster of processes (make cluster)
# or several workers on one queue; they are dropped and flushed freely, so never point these at real data.
CLUSTER_DATABASE_URL = os.environ.get("STATARB_TEST_CLUSTER_DATABASE_URL",
                                      "mysql://root@127.0.0.1:3306/statarb_test_cluster")
CLUSTER_BROKER_URL = os.environ.get("STATARB_TEST_CLUSTER_BROKER_URL", "redis://127.0.0.1:6379/14")


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def cluster_services() -> tuple[str, str]:
    """(database URL, broker URL) of the dedicated MariaDB database and Redis db. Tests marked ``services`` use it:
    they run in ``make test`` only when both servers answer; unreachable, they skip locally and fail in CI."""
    services = (("MariaDB", CLUSTER_DATABASE_URL, 3306), ("Redis", CLUSTER_BROKER_URL, 6379))
    missing = [name for name, url, port in services if not _reachable(url, port)]
    if missing:
        message = f"{' and '.join(missing)} not reachable ({CLUSTER_DATABASE_URL}, {CLUSTER_BROKER_URL})"
        if running_in_ci():
            pytest.fail(message + " (CI=true: a missing service is a failure)")
        pytest.skip(message)
    return CLUSTER_DATABASE_URL, CLUSTER_BROKER_URL
