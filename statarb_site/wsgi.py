"""WSGI entry point (gunicorn statarb_site.wsgi)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from statarb_site import celery as celery_module

# Production unless the environment names the settings (the package's import chose local for Celery meanwhile;
# nothing has read the settings yet, so the choice is still open).
if celery_module.SETTINGS_DEFAULTED:
    os.environ["DJANGO_SETTINGS_MODULE"] = "statarb_site.settings.production"

application = get_wsgi_application()


def freeze_loaded_application() -> None:
    """Import every view now (the URL configuration imports them on the first request), then move everything loaded
    so far out of the garbage collector's reach (``gc.freeze``, meant for servers like this one). None of it is
    garbage, yet a full collection walks all of it: on a request that allocates a lot, such as the daily equity
    curve of years, that was a 90 ms tail on a 70 ms answer (#16, docs/BENCHMARKS.md)."""
    get_resolver().url_patterns  # noqa: B018 -- the attribute access loads the URL configuration
    gc.freeze()


freeze_loaded_application()
