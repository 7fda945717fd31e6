"""The site's own views: a health probe for load balancers, and the API root."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from core.api import check_query_parameters


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for a load balancer: the database answers. No details that could help an attacker."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return JsonResponse({"status": "ok"})
    except Exception:  # noqa: BLE001 - any failure means "not healthy"; the reason goes to the logs, not out
        return JsonResponse({"status": "unavailable"}, status=503)


class ApiRoot(APIView):
    """The reporting API's entry point: every list it offers, by name."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, format=None):
        check_query_parameters(request, ())
        names = ("levels", "pairs", "pair-statistics", "accounts", "trades", "orders", "fills", "funding",
                 "positions", "daily-pnl", "performance", "equity", "guard-events", "halts", "schema", "docs", "redoc")
        return Response({name: reverse(f"api:{name}", request=request, format=format) for name in names})
