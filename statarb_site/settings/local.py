"""Local development and the demo on one machine: a development secret key and local host names are allowed here
(and only here and in ``test``). DEBUG stays off unless DEBUG=1 is set (``.env.example`` and ``make demo`` set it)."""

from .base import *  # noqa: F403
from .base import env

# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key
SECRET_KEY = env("SECRET_KEY", default="django-insecure-local-development-only-never-use-in-production")
# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
