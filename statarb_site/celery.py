"""The Celery application: configured from Django settings (CELERY_*), tasks discovered in every app and the site's
pipelines, and worker logging handed back to Django's LOGGING (cookiecutter-django's pattern): without that hook a
worker replaces the root handler, and the secret-redacting filter would be gone in the processes that hold the
exchange keys."""

import os

from celery import Celery
from celery.signals import setup_logging

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
