from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from core.admin_tools import AuditedAdmin, ReadOnlyAdmin
from core.audit import audit_record
from core.market_clock import market_clock
from core.secrets import SecretsKeyMissing, secrets_key_check
from execution.models import (
    BotHeartbeat,
    DailyTradeTotals,
    ExchangeAccount,
    Fill,
    FundingPayment,
    Order,
    PairTrade,
    Signal,
    SignalState,
)
from execution.selectors import credentials_source
from execution.services.accounts import account_store_credentials
from execution.services.manual import TradeCloseRefused, trade_request_close, wake_bot_of
from risk.services import guard_baselines_move_with_capital, kill_switch_engage, kill_switch_release


class ExchangeAccountForm(forms.ModelForm):
    # Write-only: the admin can replace stored credentials but never shows them, not even masked.
    new_api_key = forms.CharField(
        required=False, label="New API key", widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep what is stored. Stored encrypted with STATARB_SECRETS_KEY.",
    )
    new_api_secret = forms.CharField(
        required=False, label="New API secret", widget=forms.PasswordInput(render_value=False)
    )

    class Meta:
        model = ExchangeAccount
        fields = ("name", "exchange", "mode", "level", "capital", "per_trade_budget", "max_concurrent_trades",
                  "leverage", "position_mode", "base_url_override", "api_key_env", "api_secret_env", "enabled")

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("new_api_key")) != bool(cleaned.get("new_api_secret")):
            raise forms.ValidationError("Give both the new API key and the new API secret, or neither.")
        if cleaned.get("new_api_key") and not settings.STATARB_SECRETS_KEY:
            raise forms.ValidationError(
                "STATARB_SECRETS_KEY is not set, so credentials can't be stored encrypted. Set it, or name "
                "environment variables in 'API key env' and 'API secret env' instead."
            )
        if cleaned.get("new_api_key"):
            try:  # a malformed key was found out only in save_model: an error page, the account half saved
                secrets_key_check()
            except SecretsKeyMissing as error:
                raise forms.ValidationError(str(error)) from None
        return cleaned


@admin.register(ExchangeAccount)
class ExchangeAccountAdmin(AuditedAdmin):
    form = ExchangeAccountForm
    list_display = ("name", "exchange", "mode", "level", "capital", "per_trade_budget", "max_concurrent_trades",
                    "enabled", "credentials")
    list_filter = ("mode", "exchange", "enabled", "level")
    readonly_fields = ("credentials",)
    actions = ("halt_accounts", "halt_and_flatten_accounts", "resume_accounts")
    refuse_stale_edits = True

    # The credential fields never reach an error page or a log, even with DEBUG on.
    @method_decorator(sensitive_post_parameters("new_api_key", "new_api_secret"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def has_halt_account_permission(self, request) -> bool:
        return request.user.has_perm("execution.halt_account")

    def _halt(self, request, queryset, *, flatten: bool) -> None:
        for account in queryset:
            kill_switch_engage(account=account, flatten=flatten, user=request.user, channel="admin",
                               reason=f"halted by {request.user.get_username()} in the admin")
            transaction.on_commit(lambda pk=account.pk: wake_bot_of(pk))
        self.message_user(request, f"Halted {queryset.count()} account(s)" + (", flattening" if flatten else "")
                          + ": no entries and no signal exits but stop-losses until they are resumed.")

    @admin.action(description="Kill switch: halt the selected accounts (no entries, no exits but stop-losses)",
                  permissions=["halt_account"])
    def halt_accounts(self, request, queryset):
        self._halt(request, queryset, flatten=False)

    @admin.action(description="Kill switch: halt the selected accounts and close their trades",
                  permissions=["halt_account"])
    def halt_and_flatten_accounts(self, request, queryset):
        self._halt(request, queryset, flatten=True)

    def has_resume_permission(self, request) -> bool:
        return request.user.has_perm("risk.clear_halt")

    @admin.action(description="Resume the selected accounts (clear their kill switches and manual halts)",
                  permissions=["resume"])
    def resume_accounts(self, request, queryset):
        cleared = sum(kill_switch_release(account=account, user=request.user, channel="admin")
                      for account in queryset)
        self.message_user(request, f"Cleared {cleared} halt(s).")

    @admin.display(description="Credentials")
    def credentials(self, obj: ExchangeAccount) -> str:
        return credentials_source(obj)

    @method_decorator(sensitive_variables("form"))
    def save_model(self, request, obj, form, change):
        capital_before = form.initial.get("capital") if change else None
        super().save_model(request, obj, form, change)
        if change and "capital" in form.changed_data and capital_before is not None:
            guard_baselines_move_with_capital(account=obj, delta=obj.capital - Decimal(capital_before),
                                              today=market_clock().now().date())
        if form.cleaned_data.get("new_api_key"):
            with transaction.atomic():
                account_store_credentials(account=obj, api_key=form.cleaned_data["new_api_key"],
                                          api_secret=form.cleaned_data["new_api_secret"])
                audit_record(action="store_credentials", channel="admin", actor=request.user, target=obj,
                             summary=f"{obj.name}: new API key and secret stored (encrypted)")


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ("pair", "timeframe", "bar_time", "zscore", "hedge_ratio", "action")
    list_filter = ("action", "timeframe")
    raw_id_fields = ("pair",)
    date_hierarchy = "bar_time"


class OrderInline(admin.TabularInline):
    model = Order
    fields = ("client_order_id", "leg", "action", "side", "qty", "filled_qty", "avg_price", "fee", "status", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PairTrade)
class PairTradeAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "pair", "side_label", "state", "opened_at", "closed_at", "exit_reason",
                    "realised_pnl", "fees", "funding")
    list_filter = ("state", "side", "exit_reason", "account")
    list_select_related = ("account", "pair__y_instrument", "pair__x_instrument")
    raw_id_fields = ("pair", "entry_signal")
    readonly_fields = ("close_requested_at", "close_requested_by")
    inlines = (OrderInline,)
    date_hierarchy = "created_at"
    actions = ("close_by_hand",)

    def has_close_trade_permission(self, request) -> bool:
        return request.user.has_perm("execution.close_trade")

    @admin.action(description="Close the selected trades (the bot closes them at once, reason: by hand)",
                  permissions=["close_trade"])
    def close_by_hand(self, request, queryset):
        asked, refused = [], []
        for trade in queryset.select_related("account"):
            try:
                if trade_request_close(trade=trade, user=request.user):
                    asked.append(trade.pk)
            except TradeCloseRefused as refusal:
                refused.append(str(refusal))
        skipped = queryset.count() - len(asked) - len(refused)
        if asked or skipped:  # a selection that was all refused gets the refusals only, no "0 requested"
            self.message_user(request, f"Close requested for {len(asked)} trade(s)"
                                       + (f"; {skipped} had already finished" if skipped else "") + ".")
        for reason in refused:
            self.message_user(request, f"Refused: {reason}.", level=messages.ERROR)


@admin.register(DailyTradeTotals)
class DailyTradeTotalsAdmin(ReadOnlyAdmin):
    """Derived from the trades (kept by every trade write; ``manage.py rebuild_daily_totals``): never edited."""

    list_display = ("day", "account", "trades", "wins", "losses", "pnl", "fees", "funding", "open_us")
    list_filter = ("account",)
    list_select_related = ("account",)
    date_hierarchy = "day"


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("client_order_id", "trade", "instrument", "leg", "action", "side", "qty", "filled_qty",
                    "avg_price", "status")
    list_filter = ("status", "action", "leg")
    search_fields = ("client_order_id", "exchange_order_id")
    raw_id_fields = ("trade", "instrument")


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("order", "exchange_fill_id", "qty", "price", "fee", "fee_currency", "filled_at")
    raw_id_fields = ("order",)


@admin.register(FundingPayment)
class FundingPaymentAdmin(ReadOnlyAdmin):
    list_display = ("account", "instrument", "trade", "settled_at", "rate", "position_qty", "amount")
    list_filter = ("account",)
    raw_id_fields = ("trade", "instrument")


@admin.register(BotHeartbeat)
class BotHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("account", "beat_at", "status", "worker", "last_tick_ms", "open_trades")


@admin.register(SignalState)
class SignalStateAdmin(ReadOnlyAdmin):
    list_display = ("pair", "last_bar_time", "position", "bars_held", "cooldown", "bar_index")
    list_filter = ("position",)
    raw_id_fields = ("pair",)
