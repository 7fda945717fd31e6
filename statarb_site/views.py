"""The site's own views: a health probe for load balancers."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for a load balancer: the database answers. No details that could help an attacker."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return JsonResponse({"status": "ok"})
    except Exception:  # noqa: BLE001 - any failure means "not healthy"; the reason goes to the logs, not out
        return JsonResponse({"status": "unavailable"}, status=503)
