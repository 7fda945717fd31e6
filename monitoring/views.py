"""The monitoring dashboard (role viewer or above; closing a trade needs ``execution.close_trade``). Views only
gather what selectors return; every KPI comes from ``monitoring.selectors``."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from rest_framework.exceptions import ValidationError

from core.api import readable_errors
from core.permissions import changes_need
from execution.api import TradeFilter
from execution.models import ExchangeAccount, Order, PairTrade
from execution.services.manual import TradeCloseRefused, account_request_flatten, trade_request_close
from monitoring import dashboard as data
from monitoring.positions import open_positions
from monitoring.scopes import dashboard_scope
from monitoring.selectors import account_summaries, daily_pnl, level_summaries, scope_performance
from pairs.models import LevelChange, Pair, PairStatistics, StrategyConfig
from pairs.selectors import ladder_pairs, latest_screening_run, level_counts
from risk.selectors import active_halts, recent_guard_events, unguarded_accounts

VIEW = "monitoring.view_dashboard"
TRADES_PER_PAGE = 50


def _live_context(request: HttpRequest) -> dict:
    try:
        scope = dashboard_scope(data.scope_params(request.GET))
        error = None
    except ValidationError as invalid:
        scope, error = dashboard_scope({}), readable_errors(invalid.detail)
    single = scope.accounts[0] if len(scope.accounts) == 1 else None
    positions = open_positions(accounts=[a.pk for a in scope.accounts])
    return {
        "scope": scope,
        "scope_error": error,
        "summary": scope_performance(scope),
        "charts": data.chart_series(scope),
        "monthly": data.monthly_table(scope),
        "positions": positions,
        # A disabled account's bot does not run: a close asked of it would never be carried out.
        "flatten_accounts": sorted({p.trade.account for p in positions if p.trade.account.enabled},
                                   key=lambda a: a.name),
        "today": data.today_pnl(single) if single else None,
        "halts": active_halts().select_related("account", "pair__y_instrument", "pair__x_instrument"),
        "unguarded": unguarded_accounts(scope.accounts),
        "heartbeats": data.heartbeats(),
        "query": request.GET.urlencode(),
        "refreshed_at": timezone.now(),
        "new_install": not scope.accounts and not ExchangeAccount.objects.exists(),
    }


def _closed_trades_query(scope, period: dict) -> str:
    """The trade list's filters for every trade the view's KPIs count (the table shows the newest 25): its account,
    or its mode and level, closed from its start (to its end when one was asked for)."""
    if not scope.accounts:
        return ""
    query = QueryDict(mutable=True)
    if len(scope.accounts) == 1:
        query["account"] = scope.accounts[0].pk
    else:
        query["mode"] = scope.mode
        if scope.level is not None:
            query["level"] = scope.level
    query["closed_after"] = scope.start.isoformat()
    if period["end"]:
        query["closed_before"] = period["end"].isoformat()
    return query.urlencode()


@login_required
@permission_required(VIEW, raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    context = _live_context(request)
    # The tables by account and by level cover the period asked for, as the headline does (each its own default
    # bounds when none was asked for, and on a scope that could not be read).
    asked = context["scope_error"] is None
    # The recent trades and days are those of the accounts in view, as the KPIs and the charts: never paper or demo
    # rows among real ones.
    in_view = [a.pk for a in context["scope"].accounts]
    period = {"start": context["scope"].start if asked and request.GET.get("start") else None,
              "end": context["scope"].end if asked and request.GET.get("end") else None}
    # ... and, when a period was asked for, those of the period, as the KPIs above them (trades closed in
    # [start, end), the UTC days from start's to the one before end's).
    closed = PairTrade.objects.filter(account__in=in_view).exclude(state__in=PairTrade.ACTIVE_STATES)
    days = daily_pnl().filter(account__in=in_view)
    if period["start"]:
        closed, days = closed.filter(closed_at__gte=period["start"]), days.filter(date__gte=period["start"].date())
    if period["end"]:
        closed, days = closed.filter(closed_at__lt=period["end"]), days.filter(date__lt=period["end"].date())
    context.update({
        "choices": data.scope_choices(),
        "chosen": request.GET.get("scope", ""),
        "start": request.GET.get("start", ""),
        "end": request.GET.get("end", ""),
        "accounts": account_summaries(**period),
        "level_kpis": level_summaries(**period),
        "levels": level_counts(),
        "latest_run": latest_screening_run(),
        "ladder": ladder_pairs(),
        "recent_closed": closed.select_related("account", "pair__y_instrument", "pair__x_instrument")
        .order_by("-closed_at", "-id")[:25],
        "daily_pnl": days[:30],
        "all_closed_query": _closed_trades_query(context["scope"], period),
        "guard_events": recent_guard_events(limit=15),
    })
    return render(request, "dashboard/index.html", context)


def _login_for_refresh(view):
    """The refresh's answer once the session is gone (logged out, expired): a page that is not the live part must
    not be swapped into the dashboard (the login form inside it, the figures gone), so htmx is told to take the
    browser to the login page, which returns to the dashboard with the same filters."""
    @wraps(view)
    def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        query = request.GET.urlencode()
        login = redirect_to_login(reverse("dashboard") + (f"?{query}" if query else ""))
        if not request.headers.get("HX-Request"):
            return login
        response = HttpResponse("Signed out: log in again.", status=401, content_type="text/plain")
        response["HX-Redirect"] = login["Location"]
        return response

    return checked


@_login_for_refresh
@permission_required(VIEW, raise_exception=True)
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """The part of the dashboard that htmx reloads every 30 s: KPIs, charts, positions, halts, bots."""
    return render(request, "dashboard/_live.html", _live_context(request))


@login_required
@permission_required(VIEW, raise_exception=True)
def pair_detail(request: HttpRequest, pk: int) -> HttpResponse:
    pair = get_object_or_404(Pair.objects.select_related("y_instrument", "x_instrument", "level"), pk=pk)
    config = StrategyConfig.current()
    context = {
        "pair": pair,
        "chart": data.pair_chart(pair),
        "bands": {"entry": config.entry_z, "exit": config.exit_z, "stop": config.stop_z},
        "statistics": PairStatistics.objects.filter(pair=pair).order_by("window"),
        "level_changes": LevelChange.objects.filter(pair=pair).select_related("from_level", "to_level", "changed_by")
        .order_by("-created_at")[:50],
        "trades": PairTrade.objects.filter(pair=pair)
        .select_related("account", "pair__y_instrument", "pair__x_instrument").order_by("-id")[:100],
    }
    return render(request, "dashboard/pair.html", context)


@login_required
@permission_required(VIEW, raise_exception=True)
def trade_list(request: HttpRequest) -> HttpResponse:
    trades = PairTrade.objects.select_related("account", "pair__y_instrument", "pair__x_instrument").order_by("-id")
    filters = TradeFilter(request.GET, queryset=trades)
    refused = ""
    try:
        chosen = filters.qs if filters.is_valid() else trades.none()
    except ValidationError as exc:  # a filter that checks its value against the database (an unknown account)
        chosen, refused = trades.none(), readable_errors(exc.detail)
    page = data.list_page(chosen, request.GET.get("page"), TRADES_PER_PAGE)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "dashboard/trades.html", {
        "filters": filters, "refused": refused, "page": page, "query": query.urlencode(),
        "accounts": ExchangeAccount.objects.order_by("name"), "states": PairTrade.State.choices,
        "reasons": PairTrade.ExitReason.choices,
    }, status=400 if refused or filters.errors else 200)


@login_required
@permission_required(VIEW, raise_exception=True)
def trade_detail(request: HttpRequest, pk: int) -> HttpResponse:
    trade = get_object_or_404(
        PairTrade.objects.select_related("account", "pair__y_instrument", "pair__x_instrument"), pk=pk)
    orders = Order.objects.filter(trade=trade).select_related("instrument").prefetch_related("fills").order_by("pk")
    return render(request, "dashboard/trade.html", {"trade": trade, "orders": orders})


@login_required
@changes_need(VIEW, "execution.close_trade")
@require_http_methods(["GET", "POST"])
def trade_close(request: HttpRequest, pk: int) -> HttpResponse:
    """Close a trade by hand: a confirmation page, then the same service as the admin and the API (audited)."""
    trade = get_object_or_404(PairTrade.objects.select_related("account", "pair__y_instrument", "pair__x_instrument"),
                              pk=pk)
    if request.method == "POST":
        try:
            active = trade_request_close(trade=trade, user=request.user, channel="dashboard")
        except TradeCloseRefused as refused:
            messages.error(request, f"Not closed: {refused}.")
            return redirect("dashboard")
        if active:
            messages.success(request, f"Trade {trade.pk} will be closed by its bot at its next tick.")
        else:
            messages.warning(request, f"Trade {trade.pk} is already {trade.state}: nothing to close.")
        return redirect("dashboard")
    return render(request, "dashboard/trade_close.html", {"trade": trade})


@login_required
@changes_need(VIEW, "execution.close_trade")
@require_http_methods(["GET", "POST"])
def account_flatten(request: HttpRequest, pk: int) -> HttpResponse:
    """Close every open trade of an account: a confirmation page listing them, then the close service for each
    (audited one by one, and the flatten once)."""
    account = get_object_or_404(ExchangeAccount, pk=pk)
    if request.method == "POST":
        closing = account_request_flatten(account=account, user=request.user, channel="dashboard")
        if closing:
            messages.success(request, f"{len(closing)} open trade(s) of {account.name} will be closed by its bot at "
                                      "its next tick.")
        else:
            messages.warning(request, f"{account.name} has no open trade: nothing to close.")
        return redirect("dashboard")
    return render(request, "dashboard/account_flatten.html",
                  {"account": account, "positions": open_positions(accounts=[account.pk])})


@login_required
@permission_required(VIEW, raise_exception=True)
def system_health(request: HttpRequest) -> HttpResponse:
    accounts = list(ExchangeAccount.objects.order_by("name"))
    return render(request, "dashboard/system.html", {
        "tasks": data.periodic_tasks(),
        "queues": data.queue_lengths(),
        "today": data.guard_today(accounts),
        "heartbeats": data.heartbeats(),
        "halts": active_halts().select_related("account", "pair__y_instrument", "pair__x_instrument"),
        "guard_events": recent_guard_events(limit=50),
    })
