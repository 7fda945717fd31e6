"""The whole process set of a deployment (docs/OPERATIONS.md), as one Procfile for honcho: web (gunicorn), beat,
the selection pool, the pipelines worker (default, signals), the risk worker, the notifications worker, the Telegram
console (when TELEGRAM_BOT_TOKEN is set) and one solo worker per enabled account's queue. ``make cluster`` runs it
on this machine against the MariaDB and Redis of the environment; deploy/ has the same set as systemd units and
docker-compose services."""

from __future__ import annotations

import shlex
import sys

from django.conf import settings

from execution.models import ExchangeAccount

SELECTION_CONCURRENCY = 2


def _celery(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "celery", "-A", "statarb_site", *args])


def _worker(name: str, queues: str, *, concurrency: int = 1, solo: bool = True) -> str:
    pool = ["--pool", "solo"] if solo else ["--concurrency", str(concurrency)]
    return _celery("worker", "-Q", queues, *pool, "--hostname", f"{name}@%h", "-l", "info")


def cluster_processes(*, bind: str, web_workers: int = 2,
                      selection_concurrency: int = SELECTION_CONCURRENCY) -> dict[str, str]:
    """Process name -> command line, in start order. One worker per enabled account, on its own queue."""
    processes = {
        "web": shlex.join([sys.executable, "-m", "gunicorn", "statarb_site.wsgi", "--bind", bind,
                           "--workers", str(web_workers), "--timeout", "60"]),
        "beat": _celery("beat", "-l", "info"),
        "selection": _worker("selection", "selection", concurrency=selection_concurrency, solo=False),
        "pipelines": _worker("pipelines", "default,signals", concurrency=2, solo=False),
        "risk": _worker("risk", "risk"),
        "notifications": _worker("notifications", "notifications"),
    }
    if settings.TELEGRAM_BOT_TOKEN:
        # getUpdates allows one reader per bot token: exactly one console process, and only when a bot exists.
        processes["telegram_console"] = shlex.join([sys.executable, "manage.py", "telegram_console"])
    for account in ExchangeAccount.objects.filter(enabled=True).order_by("pk"):
        processes[f"account_{account.pk}"] = _worker(f"account-{account.pk}", account.queue_name)
    return processes


def procfile(processes: dict[str, str]) -> str:
    return "".join(f"{name}: {command}\n" for name, command in processes.items())
