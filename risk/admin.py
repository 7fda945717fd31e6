from django.contrib import admin
from django.db import transaction

from core.admin_tools import AuditedAdmin, ReadOnlyAdmin
from core.audit import audit_record
from risk.models import DailyPnlSnapshot, GuardEvent, Halt, RiskLimit
from risk.services import halt_raise, halts_clear

HALT_ACCOUNT = "execution.halt_account"  # the permission every other channel asks to halt or flatten accounts


@admin.register(RiskLimit)
class RiskLimitAdmin(AuditedAdmin):
    list_display = ("__str__", "daily_loss_limit", "daily_loss_limit_pct", "max_drawdown_pct", "max_open_trades",
                    "max_gross_exposure", "max_consecutive_losses", "max_pair_notional", "enabled")
    refuse_stale_edits = True


@admin.register(Halt)
class HaltAdmin(admin.ModelAdmin):
    """A halt is raised here (permission risk.add_halt) and cleared by the action (risk.clear_halt); it is never
    edited or deleted: its history is the audit of when trading stopped and who let it go on."""

    list_display = ("__str__", "mode", "source", "trigger", "flatten", "until", "created_at", "created_by",
                    "cleared_at", "cleared_by")
    list_filter = ("mode", "source", "trigger", "account")
    readonly_fields = ("source", "trigger", "breach_multiple", "created_at", "created_by", "cleared_at", "cleared_by")
    raw_id_fields = ("pair",)
    actions = ("clear",)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_clear_halt_permission(self, request) -> bool:
        return request.user.has_perm("risk.clear_halt")

    def get_form(self, request, obj=None, **kwargs):
        """Flattening closes every open trade of the account, and a halt of all accounts stops every bot: both
        need what the API, Telegram and ``manage.py halt`` ask for them (execution.halt_account), not only the
        permission to add a halt (a pause of one account or pair)."""
        form = super().get_form(request, obj, **kwargs)
        if request.user.has_perm(HALT_ACCOUNT):
            return form

        class WithinAddHalt(form):
            def clean(self):
                data = super().clean()
                if data.get("flatten"):
                    self.add_error("flatten", f"Flattening closes every open trade: it needs the permission "
                                              f"{HALT_ACCOUNT}.")
                if "account" in data and data["account"] is None:
                    self.add_error("account", f"A halt of all accounts needs the permission {HALT_ACCOUNT}.")
                return data

        return WithinAddHalt

    def save_model(self, request, obj, form, change):
        # Raised through the service, as every other raise, so ``halt_raised`` fires after the commit (the
        # notification) and an identical halt in force is reused. Halts are never changed here (no permission).
        with transaction.atomic():
            halt = halt_raise(account=obj.account, pair=obj.pair, source=Halt.Source.MANUAL, reason=obj.reason,
                              flatten=obj.flatten, mode=obj.mode, until=obj.until, created_by=request.user)
            audit_record(action="raise_halt", channel="admin", actor=request.user, target=halt,
                         summary=f"halt of {halt.account or 'all accounts'}: {halt.reason}")
        # The admin's messages, log entry and redirect name ``obj``: make it the halt in force.
        obj.pk, obj._state.adding = halt.pk, False
        obj.refresh_from_db()

    @admin.action(description="Clear the selected halts", permissions=["clear_halt"])
    def clear(self, request, queryset):
        with transaction.atomic():
            active = list(queryset.filter(cleared_at__isnull=True))
            count = halts_clear(halts=queryset, cleared_by=request.user)
            for halt in active:
                audit_record(action="clear_halt", channel="admin", actor=request.user, target=halt,
                             summary=f"cleared: {halt}")
        self.message_user(request, f"Cleared {count} halt(s).")


@admin.register(GuardEvent)
class GuardEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "account", "kind", "severity", "message")
    list_filter = ("severity", "kind", "account")


@admin.register(DailyPnlSnapshot)
class DailyPnlSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("date", "account", "starting_equity", "ending_equity", "realised_pnl", "unrealised_pnl", "fees",
                    "funding", "trades_opened", "trades_closed", "drawdown")
    list_filter = ("account",)
    date_hierarchy = "date"
