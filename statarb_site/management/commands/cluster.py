"""`make cluster`: prepare the database (migrations, default schedules, roles, static files), write the process set's
Procfile (statarb_site.cluster) and hand over to honcho, which runs every process until Ctrl-C or SIGTERM and then
stops them all."""

from __future__ import annotations

import ipaddress
import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connection

from statarb_site.cluster import cluster_processes, procfile


class Command(BaseCommand):
    help = ("Run the whole process set (web, beat, selection pool, pipelines, risk, notifications, one worker per "
            "account) on this machine with honcho, against DATABASE_URL and CELERY_BROKER_URL.")

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port of the web server (gunicorn)")
        parser.add_argument("--selection-concurrency", type=int, default=2, help="processes of the selection pool")
        parser.add_argument("--procfile", default=None, help="where to write the Procfile (var/Procfile.cluster)")
        parser.add_argument("--print-only", action="store_true", help="print the Procfile and exit")

    def handle(self, *args, bind: str, selection_concurrency: int, procfile: str | None, print_only: bool,
               **options):
        _check_database()
        _check_broker()
        module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
        if module.endswith(".local") and not _loopback(bind):
            # Every process inherits this command's settings: the local ones sign sessions with a public
            # development key and have none of production's HTTPS safeguards. Fine on loopback, never on a network.
            raise CommandError(
                f"the cluster runs {module} (a development secret key, no HTTPS safeguards), so it serves only on "
                f"loopback, not on {bind}: set DJANGO_SETTINGS_MODULE=statarb_site.settings.production with "
                "SECRET_KEY and ALLOWED_HOSTS (behind an HTTPS proxy) to serve a network")
        if not settings.BROKER_IS_REDIS or settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            self.stderr.write("warning: the cluster is meant for MySQL/MariaDB + Redis (DATABASE_URL, "
                              "CELERY_BROKER_URL); running on the embedded default.")
        if print_only:  # after the checks: what it prints is what a run would start
            self.stdout.write(_text(bind, selection_concurrency), ending="")
            return
        self.stdout.write("migrating, seeding the schedules and roles, collecting static files...")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_periodic_tasks", verbosity=0)
        call_command("setup_roles", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        path = procfile or str(settings.VAR_DIR / "Procfile.cluster")
        procfile_text = _text(bind, selection_concurrency)
        with open(path, "w") as handle:
            handle.write(procfile_text)
        self.stdout.write(f"{path}:\n{procfile_text}settings: {module} (every process)\n"
                          f"dashboard: http://{bind}/  health: http://{bind}/health/")
        self.stdout.flush()
        # honcho replaces this process: the signals of the caller (Ctrl-C, SIGTERM) reach it, and it stops them all.
        honcho = [sys.executable, "-m", "honcho", "-f", path, "-d", str(settings.BASE_DIR), "start"]
        os.execv(sys.executable, honcho)  # noqa: S606 (our interpreter, fixed arguments)


def _loopback(bind: str) -> bool:
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_database() -> None:
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        raise CommandError(f"the database {settings.DATABASES['default']['NAME']!r} can't be reached ({exc}): start "
                           "MariaDB and create it first, e.g. mysql -e 'CREATE DATABASE statarb CHARACTER SET "
                           "utf8mb4'") from exc


def _check_broker() -> None:
    """The broker answers before anything starts: without it every worker and beat retried for minutes in the
    background while the web served, and nothing ran. Its address is shown with the password masked."""
    from kombu import Connection
    from kombu.exceptions import OperationalError as BrokerError

    broker = Connection(settings.CELERY_BROKER_URL, connect_timeout=3)
    try:
        broker.ensure_connection(max_retries=1, timeout=5)
    except (BrokerError, OSError) as exc:
        raise CommandError(f"the broker {broker.as_uri()} can't be reached ({exc}): start Redis first, or set "
                           "CELERY_BROKER_URL") from None
    finally:
        broker.release()


def _text(bind: str, selection_concurrency: int) -> str:
    return procfile(cluster_processes(bind=bind, selection_concurrency=selection_concurrency))
