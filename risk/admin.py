from django.contrib import admin

from risk.models import DailyPnlSnapshot, GuardEvent, Halt, RiskLimit
from risk.services import halts_clear


@admin.register(RiskLimit)
class RiskLimitAdmin(admin.ModelAdmin):
    list_display = ("__str__", "daily_loss_limit", "daily_loss_limit_pct", "max_drawdown_pct", "max_open_trades",
                    "max_gross_exposure", "flatten_on_halt", "enabled")


@admin.register(Halt)
class HaltAdmin(admin.ModelAdmin):
    list_display = ("__str__", "source", "flatten", "created_at", "created_by", "cleared_at", "cleared_by")
    list_filter = ("source", "account")
    readonly_fields = ("created_at", "created_by", "cleared_at", "cleared_by")
    actions = ("clear",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Clear the selected halts")
    def clear(self, request, queryset):
        halts_clear(halts=queryset, cleared_by=request.user)


@admin.register(GuardEvent)
class GuardEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "account", "kind", "severity", "message")
    list_filter = ("severity", "kind", "account")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DailyPnlSnapshot)
class DailyPnlSnapshotAdmin(admin.ModelAdmin):
    list_display = ("date", "account", "starting_equity", "ending_equity", "realised_pnl", "unrealised_pnl", "fees",
                    "funding", "trades_opened", "trades_closed")
    list_filter = ("account",)
    date_hierarchy = "date"
