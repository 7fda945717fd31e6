"""The site's own views: a health probe for load balancers, and the API root."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.contrib import admin
from django.db import connection, transaction
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from core.api import check_query_parameters
from core.audit import audit_record
from core.tokens import credentials_changed
from execution.bot.guard_watch import configured_guard_max_age
from execution.models import BotHeartbeat, ExchangeAccount
from monitoring.dashboard import HEARTBEAT_STALE_AFTER
from notifications.sender import deliveries_failing
from statarb_site.celery import app as celery_app
from statarb_site.worker_check import workers_check

logger = logging.getLogger(__name__)


NOTIFICATION_LATE = timedelta(minutes=10)  # a delivery still retrying after this: its destination is down
BEAT_STALE_AFTER = timedelta(minutes=5)  # the bots' dispatch runs every minute: five without a run mean beat is down


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.exception("health: the database does not answer")
        return False


BROKER_CHECK_TIMEOUT_S = 1.0  # a probe must answer fast even when the broker accepts connections and stays silent


def _broker_ok() -> bool:
    """Connect to the broker in a daemon thread and wait at most BROKER_CHECK_TIMEOUT_S: a silent broker (accepting
    and never answering) must not hold the probe, whose callers give up after a couple of seconds."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with celery_app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0, timeout=BROKER_CHECK_TIMEOUT_S)
            result.append(True)
        except Exception:
            logger.exception("health: the broker does not answer")

    thread = threading.Thread(target=probe, name="health-broker-probe", daemon=True)
    thread.start()
    thread.join(BROKER_CHECK_TIMEOUT_S)
    return bool(result)


def _beat_check(now) -> dict:
    last = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
    if last is None:
        return {"status": "unknown"}
    return {"status": "stale" if now - last > BEAT_STALE_AFTER else "ok",
            "seconds_since_last_run": int((now - last).total_seconds())}


GUARD_TASK = "monitoring.tasks.run_guard"


def _guard_check(now) -> dict:
    """The guard's own schedule: enabled, and sent by beat within ``BEAT_STALE_AFTER``. Beat's check reads any task:
    the guard's schedule switched off (the admin's periodic tasks) left every account trading without its limits
    while /health/ stayed green. "missing" while an enabled account trades without a guard schedule."""
    last = PeriodicTask.objects.filter(task=GUARD_TASK, enabled=True).aggregate(
        last=Max("last_run_at"), schedules=Count("pk"))
    if not last["schedules"]:
        return {"status": "missing" if ExchangeAccount.objects.filter(enabled=True).exists() else "ok"}
    if last["last"] is None:
        return {"status": "unknown"}
    check = {"status": "stale" if now - last["last"] > BEAT_STALE_AFTER else "ok",
             "seconds_since_last_run": int((now - last["last"]).total_seconds())}
    if unchecked := _accounts_unchecked(now):
        check.update(status="stale", accounts_unchecked=unchecked)
    return check


def _accounts_unchecked(now) -> int:
    """Enabled accounts no scheduled cycle has checked within STATARB_GUARD_MAX_AGE_S, whose bots open no trade
    (execution.bot.guard_watch): beat sending the task does not say its cycles end. A new or re-enabled account has
    that long for its first cycle, as the bots give it."""
    max_age = configured_guard_max_age()
    if max_age is None:
        return 0
    return ExchangeAccount.objects.filter(enabled=True, updated_at__lt=now - max_age).exclude(
        guard_state__live_checked_at__gte=now - max_age).count()


def _bots_check(now) -> dict:
    """Every enabled account's bot beat within the limit; one that has never beaten although the account was
    enabled (or changed) longer ago than that counts as stale too: a bot that fails before its first beat (its key
    can't be read) must not look healthy for having no heartbeat to judge."""
    beats = list(BotHeartbeat.objects.filter(account__enabled=True).values_list("beat_at", flat=True))
    stale = sum(1 for beat in beats if now - beat > HEARTBEAT_STALE_AFTER)
    never = ExchangeAccount.objects.filter(enabled=True, heartbeat__isnull=True,
                                           updated_at__lt=now - HEARTBEAT_STALE_AFTER).count()
    return {"status": "stale" if stale or never else "ok", "bots": len(beats), "stale": stale + never}


def _notifications_check(now) -> dict:
    """Deliveries that gave up in the last day, and those still retrying after ``NOTIFICATION_LATE``: an alert that
    does not arrive is an outage of its own."""
    found = deliveries_failing(failed_since=now - timedelta(days=1), retrying_before=now - NOTIFICATION_LATE)
    return {"status": "failing" if any(found.values()) else "ok", "failed_last_day": found["failed"],
            "retrying_late": found["retrying"]}


def health(request: HttpRequest) -> JsonResponse:
    """Health for a load balancer and for monitoring: the database, the broker, beat's last run, the guard's
    schedule (enabled and sent by beat in the last 5 minutes), the bots' heartbeats (stale after 3 minutes) and the
    workers (every shared queue and each enabled account's queue has a live worker, ``statarb_site.worker_check``).
    Only statuses, counts and queue names go out, no error text.

    503 when the database does not answer (the web can't serve); with ``?strict=1`` (monitoring) also when the
    broker is down, beat, the guard or a bot is stale (or the guard has no schedule while an account is enabled, or
    has not checked an enabled account within STATARB_GUARD_MAX_AGE_S: its bot opens no trade), a
    queue has no worker, or a notification gave up (last day) or has been retrying for more than 10 minutes.
    Otherwise 200, ``status`` "ok" or "degraded"."""
    now = timezone.now()
    database = _database_ok()
    checks: dict = {"database": {"status": "ok" if database else "unavailable"}}
    if database:
        checks["broker"] = {"status": "ok" if _broker_ok() else "unavailable"}
        checks["beat"] = _beat_check(now)
        checks["guard"] = _guard_check(now)
        checks["bots"] = _bots_check(now)
        checks["notifications"] = _notifications_check(now)
        checks["workers"] = workers_check(celery_app) if checks["broker"]["status"] == "ok" else {"status": "unknown"}
    failing = [name for name, check in checks.items()
               if check["status"] in ("unavailable", "stale", "missing", "failing")]
    status = "unavailable" if not database else ("degraded" if failing else "ok")
    strict = request.GET.get("strict") in ("1", "true")
    code = 503 if not database or (strict and failing) else 200
    return JsonResponse({"status": status, "checks": checks}, status=code)


class ApiRoot(APIView):
    """The reporting API's entry point: every list it offers, by name."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, format=None):
        check_query_parameters(request, (), paginated=False)
        names = ("levels", "pairs", "pair-statistics", "accounts", "trades", "orders", "fills", "funding",
                 "positions", "daily-pnl", "performance", "equity", "guard-events", "halts", "schema", "docs", "redoc")
        return Response({name: reverse(f"api:{name}", request=request, format=format) for name in names})


def _own_password_change(request: HttpRequest) -> HttpResponse:
    """The admin's "Change password" (a signed-in user's own password), audited: Django's view leaves no trace, so a
    stolen session that changed its owner's password to lock them out left nothing in the trail. A POST answered by
    the redirect to "done" is a saved password; the audit is written in the same transaction."""
    with transaction.atomic():
        response = admin.site.password_change(request)
        if request.method == "POST" and response.status_code == 302:
            change = f"{request.user.get_username()} changed their own password"
            audit_record(action="change_password", channel="admin", actor=request.user, target=request.user,
                         summary=change)
            credentials_changed(user=request.user, change=change, channel="admin", actor=request.user,
                                actor_label=request.user.get_username())
    return response


own_password_change = admin.site.admin_view(_own_password_change, cacheable=True)
