"""The test suite: the local settings with a fixed key, fast password hashing and mail kept in memory."""

from .local import *  # noqa: F403

# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key
SECRET_KEY = "test-only-secret-key-not-used-anywhere-else-0123456789abcdef"  # noqa: S105
# https://docs.djangoproject.com/en/5.2/topics/testing/overview/#password-hashing
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# https://docs.djangoproject.com/en/5.2/topics/email/#in-memory-backend
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# The tests point accounts at a fake exchange on 127.0.0.1.
STATARB_ALLOW_LOOPBACK_BASE_URLS = True
# A single test logs in many times; the lock-out itself is tested with its own limit.
AXES_FAILURE_LIMIT = 5
# Notifications are sent by the tests themselves (the sender, against a fake Telegram), never by a broker nudge.
NOTIFICATIONS_NUDGE = False
# In-process screenings run in one process: the test process is also a Celery client (result.get over the Redis
# result backend), and a child forked after that runs Celery's after-fork hooks on the inherited sockets and can hang
# in recv. The forked screen is tested with its process counts set explicitly (tests/pairs/quant, test_screening).
STATARB_SCREEN_PROCESSES = 1
# The bot tests tick accounts through Celery with no guard process beside them; the bots' check that the guard is
# running has tests of its own (tests/execution/bot/test_guard_watch.py), which turn it on.
STATARB_GUARD_MAX_AGE_S = 0
