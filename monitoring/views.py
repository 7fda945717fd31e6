"""The monitoring dashboard (role viewer or above). Views only gather what selectors return."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from execution.models import BotHeartbeat, PairTrade
from monitoring.scopes import dashboard_scope
from monitoring.selectors import daily_pnl, scope_performance
from pairs.selectors import ladder_pairs, latest_screening_run, level_counts
from risk.selectors import active_halts, recent_guard_events


@login_required
@permission_required("monitoring.view_dashboard", raise_exception=True)
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
        "summary": scope_performance(dashboard_scope(request.GET)),
        "levels": level_counts(),
        "latest_run": latest_screening_run(),
        "ladder": ladder_pairs(),
        "open_trades": open_trades,
        "recent_closed": recent_closed,
        "halts": active_halts().select_related("account"),
        "guard_events": recent_guard_events(limit=15),
        "heartbeats": BotHeartbeat.objects.select_related("account").order_by("account__name"),
        "daily_pnl": daily_pnl()[:30],
    }
    return render(request, "dashboard/index.html", context)
