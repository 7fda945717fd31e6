"""Run the web server, one Celery worker and Celery beat together, for the demo or a single-machine setup.

Production runs the three as separate services (see README); this keeps a one-command start for the embedded
default. The worker listens on every shared queue and on the queue of each enabled account.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from execution.models import ExchangeAccount

SHARED_QUEUES = ("default", "selection", "signals", "risk", "notifications")


class Command(BaseCommand):
    help = "Run web server + Celery worker + Celery beat until interrupted (or for --exit-after seconds)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port of the web server")
        parser.add_argument("--exit-after", type=float, default=None, help="stop everything after N seconds")

    def handle(self, *args, bind: str, exit_after: float | None, **options):
        account_queues = [a.queue_name for a in ExchangeAccount.objects.filter(enabled=True)]
        queues = ",".join((*SHARED_QUEUES, *account_queues))
        celery = [sys.executable, "-m", "celery", "-A", "statarb_site"]
        if settings.DEBUG:
            web = [sys.executable, "manage.py", "runserver", "--noreload", bind]
        else:
            web = [sys.executable, "-m", "gunicorn", "statarb_site.wsgi", "--bind", bind, "--workers", "2"]
        commands = {
            "web": web,
            "worker": [*celery, "worker", "-l", "info", "-Q", queues, "--concurrency", "2"],
            "beat": [*celery, "beat", "-l", "info"],
        }
        # Our own interpreter and fixed arguments; nothing comes from user input.
        processes = {name: subprocess.Popen(command) for name, command in commands.items()}  # noqa: S603
        self.stdout.write(f"dashboard: http://{bind}/  (worker queues: {queues})")
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        started = time.monotonic()
        exit_code = 0
        try:
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with code {process.returncode}; stopping the rest.")
                        exit_code = process.returncode or 1
                        stopping = True
                if exit_after is not None and time.monotonic() - started >= exit_after:
                    stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        if exit_code:
            sys.exit(exit_code)
