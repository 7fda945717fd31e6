"""A real web server process (``manage.py runserver``) on this test session's database, for tests that must see
the application as a user does: its own process, its own broker connection, real HTTP on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

from django.db import connection

from tests.conftest import REPO_ROOT

START_TIMEOUT_S = 60


def session_database_url() -> str:
    """The URL of the database this test session really uses (pytest-django's test_ database)."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    if connection.vendor == "mysql":
        password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
        port = f":{params['PORT']}" if params["PORT"] else ""
        return f"mysql://{params['USER']}{password}@{params['HOST'] or '127.0.0.1'}{port}/{params['NAME']}"
    raise AssertionError(f"no URL rule for database vendor {connection.vendor}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_server(extra_env: dict[str, str] | None = None):
    """Yields the server's base URL; the server stops when the block ends."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": session_database_url(), "DJANGO_SETTINGS_MODULE": "statarb_site.settings.test",
           "DEBUG": "0", **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{base_url}/health/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    why = process.stderr.read() if process.poll() is not None else "timeout"
                    raise AssertionError(f"the server did not start: {why}") from None
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
