from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from execution.api import AccountListApi, FillListApi, FundingListApi, OrderListApi, TradeCloseApi, TradeListApi
from monitoring import views as dashboard_views
from monitoring.api import DailyPnlListApi, EquityListApi, PerformanceApi, PositionListApi
from monitoring.guard.api import HaltCreateApi, ResumeApi
from pairs.api import LevelListApi, PairListApi, PairStatisticsListApi
from risk.api import GuardEventListApi, HaltListApi
from statarb_site import views

api_patterns = [
    path("", views.ApiRoot.as_view(), name="root"),
    path("levels/", LevelListApi.as_view(), name="levels"),
    path("pairs/", PairListApi.as_view(), name="pairs"),
    path("accounts/", AccountListApi.as_view(), name="accounts"),
    path("trades/", TradeListApi.as_view(), name="trades"),
    path("trades/<int:pk>/close/", TradeCloseApi.as_view(), name="trade-close"),
    path("pnl/daily/", DailyPnlListApi.as_view(), name="daily-pnl"),
    path("performance/", PerformanceApi.as_view(), name="performance"),
    # Reporting (#16): the rest of what a report needs.
    path("pair-statistics/", PairStatisticsListApi.as_view(), name="pair-statistics"),
    path("orders/", OrderListApi.as_view(), name="orders"),
    path("fills/", FillListApi.as_view(), name="fills"),
    path("funding/", FundingListApi.as_view(), name="funding"),
    path("positions/", PositionListApi.as_view(), name="positions"),
    path("equity/", EquityListApi.as_view(), name="equity"),
    path("guard-events/", GuardEventListApi.as_view(), name="guard-events"),
    path("halts/", HaltListApi.as_view(), name="halts"),
    path("halt/", HaltCreateApi.as_view(), name="halt"),
    path("resume/", ResumeApi.as_view(), name="resume"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start script as a file: no inline script, so the CSP holds.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
]

urlpatterns = [
    path("", dashboard_views.dashboard, name="dashboard"),
    # The dashboard's pages (#16).
    path("dashboard/live/", dashboard_views.dashboard_live, name="dashboard-live"),
    path("pairs/<int:pk>/", dashboard_views.pair_detail, name="pair"),
    path("trades/", dashboard_views.trade_list, name="trades"),
    path("trades/<int:pk>/", dashboard_views.trade_detail, name="trade"),
    path("trades/<int:pk>/close/", dashboard_views.trade_close, name="trade-close"),
    path("accounts/<int:pk>/flatten/", dashboard_views.account_flatten, name="account-flatten"),
    path("system/", dashboard_views.system_health, name="system"),
    path("health/", views.health, name="health"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Before the admin's own: the same page, audited.
    path("admin/password_change/", views.own_password_change),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_patterns, "api"))),
    path("api/", RedirectView.as_view(pattern_name="api:root", permanent=False)),
]

admin.site.site_header = "statarb administration"
admin.site.site_title = "statarb"
