"""`make cluster`: the whole process set of a deployment (statarb_site.cluster) started by honcho on MariaDB + Redis.

The end-to-end test runs the real `make cluster` (without its install step, which the suite's own `make test` has
done) as a subprocess on a loopback port, on the dedicated MariaDB database and Redis db of ``cluster_services``,
waits until `/health/?strict=1` reports every part healthy (database, broker, beat having run, the paper account's
bot having beaten), then stops it as Ctrl-C does and checks every process stopped."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from statarb_site.cluster import cluster_processes, procfile
from tests.conftest import REPO_ROOT
from tests.factories import ExchangeAccountFactory
from tests.live_server import free_port

HEALTHY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60


@pytest.mark.django_db
def test_the_process_set_has_every_queue_and_one_solo_worker_per_enabled_account():
    first, second = ExchangeAccountFactory(), ExchangeAccountFactory()
    ExchangeAccountFactory(enabled=False)

    processes = cluster_processes(bind="127.0.0.1:8123", selection_concurrency=3)

    assert list(processes) == ["web", "beat", "selection", "pipelines", "risk", "notifications",
                               f"account_{first.pk}", f"account_{second.pk}"]
    args = {name: shlex.split(command) for name, command in processes.items()}
    assert args["web"][1:3] == ["-m", "gunicorn"] and "127.0.0.1:8123" in args["web"]
    assert args["beat"][-3:] == ["beat", "-l", "info"]

    def queues(name):
        return args[name][args[name].index("-Q") + 1].split(",")

    consumed = {queue for name in processes if name not in ("web", "beat") for queue in queues(name)}
    assert consumed == {"selection", "default", "signals", "risk", "notifications", first.queue_name,
                        second.queue_name}
    assert args["selection"][args["selection"].index("--concurrency") + 1] == "3"
    for account in (first, second):
        worker = args[f"account_{account.pk}"]
        assert queues(f"account_{account.pk}") == [account.queue_name]
        assert worker[worker.index("--pool") + 1] == "solo"  # one process: the account's orders in sequence
    text = procfile(processes)
    assert text.splitlines()[0] == f"web: {processes['web']}" and text.count("\n") == len(processes)


@pytest.mark.django_db
def test_the_telegram_console_runs_once_and_only_with_a_bot_token(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    assert "telegram_console" not in cluster_processes(bind="127.0.0.1:8123")
    settings.TELEGRAM_BOT_TOKEN = "123:abc"
    processes = cluster_processes(bind="127.0.0.1:8123")
    assert shlex.split(processes["telegram_console"])[1:] == ["manage.py", "telegram_console"]
    assert "123:abc" not in procfile(processes)  # the token stays in the environment, never in the Procfile


@pytest.mark.django_db
def test_the_local_settings_serve_only_on_loopback(monkeypatch):
    """Every process of the cluster inherits the command's settings; the local ones (a public development key, no
    HTTPS safeguards) are refused on a network address before anything is migrated or started."""
    from django.core.management import CommandError, call_command

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "statarb_site.settings.local")
    for bind in ("0.0.0.0:8000", "192.168.1.5:8000", "statarb.example.com:80"):
        with pytest.raises(CommandError, match="only on loopback"):
            call_command("cluster", bind=bind)
        with pytest.raises(CommandError, match="only on loopback"):  # nor printed as if it would run
            call_command("cluster", bind=bind, print_only=True)
    from statarb_site.management.commands.cluster import _loopback

    assert _loopback("127.0.0.1:8000") and _loopback("[::1]:8000") and _loopback("localhost:8000")


@pytest.mark.django_db
def test_an_unreachable_broker_is_refused_before_anything_starts(settings, monkeypatch):
    """Started without its Redis, the cluster ran the web while every worker and beat retried in the background."""
    from django.core.management import CommandError, call_command

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "statarb_site.settings.local")
    settings.CELERY_BROKER_URL = f"redis://:broker-Pw-123@127.0.0.1:{free_port()}/0"

    with pytest.raises(CommandError) as info:
        call_command("cluster", print_only=True)

    message = str(info.value)
    assert message.startswith("the broker redis://:**@127.0.0.1:") and "can't be reached (" in message
    assert message.endswith("start Redis first, or set CELERY_BROKER_URL") and "broker-Pw-123" not in message


def _prepare(database_url: str, broker_url: str, env: dict[str, str]) -> None:
    """A fresh start on the dedicated database and Redis db: migrated, the demo's paper account, beat's schedules
    last run an hour ago (so only a running beat makes them fresh) and no bot heartbeat (only a running bot
    writes one)."""
    import MySQLdb
    import redis

    parts = urlsplit(database_url)
    connection = MySQLdb.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                 password=parts.password or "")
    try:
        connection.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{parts.path.lstrip('/')}` "
                                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        connection.close()
    redis.Redis.from_url(broker_url).flushdb()
    script = (
        "from datetime import timedelta\n"
        "from django.core.management import call_command\n"
        "from django.utils import timezone\n"
        "from django_celery_beat.models import PeriodicTask\n"
        "from execution.models import BotHeartbeat\n"
        "call_command('migrate', interactive=False, verbosity=0)\n"
        "call_command('setup_periodic_tasks', verbosity=0)\n"
        "call_command('seed_demo', verbosity=0)\n"
        "PeriodicTask.objects.update(last_run_at=timezone.now() - timedelta(hours=1))\n"
        "BotHeartbeat.objects.all().delete()\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=REPO_ROOT, env=env, check=True,
                   timeout=300, capture_output=True)


def _health(base_url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{base_url}/health/?strict=1", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.services
@pytest.mark.worker
def test_make_cluster_starts_every_process_and_health_reports_every_part_healthy(cluster_services):
    database_url, broker_url = cluster_services
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url,
           "CELERY_RESULT_BACKEND": broker_url, "DJANGO_SETTINGS_MODULE": "statarb_site.settings.local",
           "DEBUG": "0", "CELERY_TASK_ALWAYS_EAGER": "0",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    _prepare(database_url, broker_url, env)
    # -o install: the suite runs inside the venv `make test` installed; don't reinstall it from here.
    process = subprocess.Popen(["make", "-o", "install", "cluster", f"CLUSTER_BIND=127.0.0.1:{port}"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    base_url = f"http://127.0.0.1:{port}"
    status, body = None, None
    try:
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, body = _health(base_url)
            except OSError:
                status = None
            if status == 200 and body["checks"]["beat"]["status"] == "ok" and body["checks"]["bots"]["bots"] and \
                    body["checks"]["workers"]["status"] == "ok" and body["checks"]["guard"]["status"] == "ok":
                break
            time.sleep(1)
        assert process.poll() is None, "make cluster exited:\n" + "".join(output[-80:])
        assert status == 200, (status, body, "".join(output[-80:]))
        assert body == {"status": "ok", "checks": {
            "database": {"status": "ok"}, "broker": {"status": "ok"},
            "beat": {"status": "ok", "seconds_since_last_run": body["checks"]["beat"]["seconds_since_last_run"]},
            "guard": {"status": "ok", "seconds_since_last_run": body["checks"]["guard"]["seconds_since_last_run"]},
            "bots": {"status": "ok", "bots": 1, "stale": 0},
            "notifications": {"status": "ok", "failed_last_day": 0, "retrying_late": 0},
            "workers": {"status": "ok", "queues": 6, "missing": []}}}, body
        assert body["checks"]["beat"]["seconds_since_last_run"] < 120
        assert body["checks"]["guard"]["seconds_since_last_run"] < 120
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail("make cluster did not stop on Ctrl-C:\n" + "".join(output[-80:]))
        reader.join(timeout=5)
    log = "".join(output)
    names = ("web", "beat", "selection", "pipelines", "risk", "notifications")
    for name in names:
        assert f"{name}.1 stopped" in log, name
    account_lines = [line for line in log.splitlines() if line.startswith("account_") and ": " in line]
    assert len(account_lines) == 1 and "-Q execution.account." in account_lines[0], account_lines
    account_process = account_lines[0].split(":", 1)[0]
    assert f"{account_process}.1 stopped" in log
    assert "execution.tasks.run_bot[" in log  # the account's own worker ran its bot
    # Every process started by honcho is gone (its own process group, left with make).
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


@pytest.mark.django_db
def test_deploy_describes_the_same_process_set_as_make_cluster(settings):
    """systemd units and compose services for every process of the cluster (accounts: one template / example)."""
    settings.TELEGRAM_BOT_TOKEN = "123:abc"
    account = ExchangeAccountFactory()
    names = set(cluster_processes(bind="127.0.0.1:8123")) - {f"account_{account.pk}"}
    deploy = Path(settings.BASE_DIR) / "deploy"
    units = {path.stem for path in (deploy / "systemd").glob("*.service")}
    services = set(yaml.safe_load((deploy / "docker-compose.yml").read_text())["services"])
    unit_of = {"web": "statarb-web", "beat": "statarb-beat", "telegram_console": "statarb-telegram-console"}
    service_of = {"web": "web", "beat": "beat", "telegram_console": "telegram-console"}
    for name in names:
        assert unit_of.get(name, f"statarb-worker-{name}") in units, name
        assert service_of.get(name, f"worker-{name}") in services, name
    assert "statarb-worker-account@" in units and "worker-account-1" in services
