"""Run the web server, the Celery workers and Celery beat together, for the demo or a single-machine setup.

Production runs them as separate services (docs/OPERATIONS.md); this keeps a one-command start for the embedded
default. One worker (two processes) serves every shared queue; a second, single-process worker serves the queues of
the enabled accounts. A bot's lease belongs to one process: with the accounts' ticks spread over a pool's processes,
each tick that lands on another process than the lease holder's would be refused ("locked") until the lease
expires, and the account would miss those bars.

With STATARB_MARKET_CLOCK=stored (``make demo`` only) it first starts or resumes the demo's stored-data clock
(``statarb_site.demo_clock``): the three processes then run on it, and the paper accounts trade the stored candles.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from execution.models import ExchangeAccount
from statarb_site.celery import app as celery_app
from statarb_site.demo_clock import NoStoredData, demo_clock_setup

SHARED_QUEUES = ("default", "selection", "signals", "risk", "notifications")


class Command(BaseCommand):
    help = "Run web server + Celery worker + Celery beat until interrupted (or for --exit-after seconds)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port of the web server")
        parser.add_argument("--exit-after", type=float, default=None, help="stop everything after N seconds")
        parser.add_argument("--clock-start", type=_aware_datetime, default=None,
                            help="STATARB_MARKET_CLOCK=stored only: where the stored-data clock starts, a bar close "
                                 "in UTC like 2021-07-01T00:00 (default: where it stands, or on a first start 7 days "
                                 "before the newest stored bar)")
        parser.add_argument("--bar-seconds", type=float, default=None,
                            help="STATARB_MARKET_CLOCK=stored only: wall seconds per stored bar (default "
                                 "STATARB_DEMO_BAR_SECONDS)")

    def handle(self, *args, bind: str, exit_after: float | None, clock_start: datetime | None,
               bar_seconds: float | None, **options):
        self._clock_setup(clock_start, bar_seconds)
        account_queues = [a.queue_name for a in ExchangeAccount.objects.filter(enabled=True)]
        queues = ",".join(SHARED_QUEUES)
        celery = [sys.executable, "-m", "celery", "-A", "statarb_site"]
        if settings.DEBUG:
            web = [sys.executable, "manage.py", "runserver", "--noreload", bind]
        else:
            web = [sys.executable, "-m", "gunicorn", "statarb_site.wsgi", "--bind", bind, "--workers", "2"]
        commands = {
            "web": web,
            "worker": [*celery, "worker", "-l", "info", "-Q", queues, "--concurrency", "2", "--hostname",
                       "shared@%h"],
            "beat": [*celery, "beat", "-l", "info"],
        }
        if account_queues:
            commands["accounts"] = [*celery, "worker", "-l", "info", "-Q", ",".join(account_queues), "--pool", "solo",
                                    "--hostname", "accounts@%h"]
        _declare_queues([*SHARED_QUEUES, *account_queues])
        # Our own interpreter and fixed arguments; nothing comes from user input.
        processes = {name: subprocess.Popen(command) for name, command in commands.items()}  # noqa: S603
        served = f"worker queues: {queues}" + (f"; account worker: {', '.join(account_queues)}" if account_queues
                                                else "")
        self.stdout.write(f"dashboard: http://{bind}/  ({served})")
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

    def _clock_setup(self, start: datetime | None, bar_seconds: float | None) -> None:
        try:
            clock = demo_clock_setup(start=start, bar_seconds=bar_seconds or settings.STATARB_DEMO_BAR_SECONDS)
        except (NoStoredData, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if clock is None:
            if start is not None or bar_seconds is not None:
                raise CommandError("--clock-start and --bar-seconds need STATARB_MARKET_CLOCK=stored")
            return
        pace = f"one {clock.bar} bar every {clock.wall_seconds:g} s of wall time"
        if clock.ended_at is not None:
            self.stdout.write(self.style.WARNING(
                f"stored-data clock (demo, simulated): the stored data ran out at {clock.end:%Y-%m-%d %H:%M} UTC; "
                "the clock stays there (`make clean` starts over)"))
            return
        self.stdout.write(self.style.WARNING(
            f"stored-data clock (demo, simulated): paper accounts trade the stored candles from "
            f"{clock.moment:%Y-%m-%d %H:%M} UTC to {clock.end:%Y-%m-%d %H:%M} UTC, {pace} "
            f"({clock.bars_total - clock.bars_done} bars, about "
            f"{(clock.bars_total - clock.bars_done) * clock.wall_seconds / 60:.0f} min); demo and real accounts "
            "refuse to trade on it"))


def _declare_queues(names: list[str]) -> None:
    """Declare every queue before the processes start. The embedded broker (kombu's SQLAlchemy transport) creates a
    queue's row on first use without handling a concurrent insert: two workers (or a worker and beat) that first
    touch the same queue at the same moment crash one of them on the unique name. Declaring is idempotent on Redis."""
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in names:
            channel.queue_declare(queue=name, durable=True, auto_delete=False)


def _aware_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
