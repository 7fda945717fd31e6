"""A task only the worker-logging test loads into its worker (``celery worker --include``): it reads an account's
credentials the way a bot does (which registers them as secrets) and then logs them, with the master key, as a
careless log line anywhere in the worker could."""

import logging

from celery import shared_task
from django.conf import settings

from execution.models import ExchangeAccount
from execution.selectors import account_credentials

logger = logging.getLogger("statarb.test.worker")


@shared_task(name="tests.log_the_credentials")
def log_the_credentials(account_id: int) -> str:
    credentials = account_credentials(account=ExchangeAccount.objects.get(pk=account_id))
    logger.warning("connecting with key %s and secret %s", credentials.api_key, credentials.api_secret)
    logger.error(f"the master key is {settings.STATARB_SECRETS_KEY}")
    try:
        raise RuntimeError(f"failed with {credentials.api_key}")
    except RuntimeError:
        logger.exception("a traceback")
    return "logged"
