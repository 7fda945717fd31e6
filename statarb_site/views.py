"""The monitoring dashboard (staff only) and a health probe. Views only gather what selectors return."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from execution.models import BotHeartbeat, PairTrade
from pairs.selectors import ladder_pairs, latest_screening_run, level_counts
from risk.selectors import active_halts, daily_pnl, performance_summary, recent_guard_events


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    open_trades = (
        PairTrade.objects.filter(state__in=PairTrade.ACTIVE_STATES)
        .select_related("account", "pair__y_instrument", "pair__x_instrument")
        .order_by("-created_at")
    )
    recent_closed = (
        PairTrade.objects.exclude(state__in=PairTrade.ACTIVE_STATES)
        .select_related("account", "pair__y_instrument", "pair__x_instrument")
        .order_by("-closed_at", "-id")[:25]
    )
    context = {
        "summary": performance_summary(),
        "levels": level_counts(),
        "latest_run": latest_screening_run(),
        "ladder": ladder_pairs(),
        "open_trades": open_trades,
        "recent_closed": recent_closed,
        "halts": active_halts(),
        "guard_events": recent_guard_events(limit=15),
        "heartbeats": BotHeartbeat.objects.select_related("account").order_by("account__name"),
        "daily_pnl": daily_pnl()[:30],
    }
    return render(request, "dashboard/index.html", context)


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for a load balancer: the database answers. No details that could help an attacker."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return JsonResponse({"status": "ok"})
    except Exception:  # noqa: BLE001 - any failure means "not healthy"; the reason goes to the logs, not out
        return JsonResponse({"status": "unavailable"}, status=503)
