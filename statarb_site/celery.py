"""The Celery application: configured from Django settings (CELERY_*), tasks discovered in every app and the site's
pipelines, and worker logging handed back to Django's LOGGING (cookiecutter-django's pattern): without that hook a
worker replaces the root handler, and the secret-redacting filter would be gone in the processes that hold the
exchange keys."""

import os

from celery import Celery
from celery.signals import celeryd_after_setup, setup_logging, worker_process_init

# A process started as `celery -A statarb_site` without a settings module runs the local (development) settings.
# This module is imported with the package, before wsgi.py: it notes whether it chose, so that a web server started
# without one (gunicorn statarb_site.wsgi) gets production as documented, not this development default.
SETTINGS_DEFAULTED = "DJANGO_SETTINGS_MODULE" not in os.environ
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statarb_site.settings.local")

app = Celery("statarb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["statarb_site"], related_name="pipelines")


@setup_logging.connect
def configure_logging_from_django(*args, **kwargs) -> None:
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


# BLAS threads (core.threads): the worker's processes share the cores, so each gets cores // concurrency threads.
# Declared in the main process before the pool starts (prefork children inherit it) and applied process-wide in
# every process that runs tasks, so numerical code outside the screening's own limits is held there too.
_process_blas_limit = None


@celeryd_after_setup.connect
def divide_blas_threads(sender=None, instance=None, **kwargs) -> None:
    from core.threads import process_configure

    process_configure(processes=getattr(instance, "concurrency", None) or 1)
    _limit_blas_in_this_process()


@worker_process_init.connect
def limit_blas_threads_in_child(*args, **kwargs) -> None:
    _limit_blas_in_this_process()


def _limit_blas_in_this_process() -> None:
    global _process_blas_limit
    from threadpoolctl import threadpool_limits

    from core.threads import blas_threads

    _process_blas_limit = threadpool_limits(limits=blas_threads(), user_api="blas")
