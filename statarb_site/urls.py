from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from execution.api import AccountListApi, TradeCloseApi, TradeListApi
from monitoring.api import DailyPnlListApi, PerformanceApi
from monitoring.views import dashboard
from pairs.api import LevelListApi, PairListApi
from risk.api import GuardEventListApi, HaltListApi
from statarb_site import views

api_patterns = [
    path("levels/", LevelListApi.as_view(), name="levels"),
    path("pairs/", PairListApi.as_view(), name="pairs"),
    path("accounts/", AccountListApi.as_view(), name="accounts"),
    path("trades/", TradeListApi.as_view(), name="trades"),
    path("trades/<int:pk>/close/", TradeCloseApi.as_view(), name="trade-close"),
    path("pnl/daily/", DailyPnlListApi.as_view(), name="daily-pnl"),
    path("performance/", PerformanceApi.as_view(), name="performance"),
    path("guard-events/", GuardEventListApi.as_view(), name="guard-events"),
    path("halts/", HaltListApi.as_view(), name="halts"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("health/", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
]

admin.site.site_header = "statarb administration"
admin.site.site_title = "statarb"
