"""Settings by environment: ``base`` (shared), ``local`` (manage.py, Celery and the demo), ``production`` (gunicorn;
no default secret key, DEBUG off) and ``test`` (pytest). Pick one with DJANGO_SETTINGS_MODULE."""
