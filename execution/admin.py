from django import forms
from django.conf import settings
from django.contrib import admin

from execution.models import (
    BotHeartbeat,
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
from execution.services.manual import trade_request_close


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
        return cleaned


@admin.register(ExchangeAccount)
class ExchangeAccountAdmin(admin.ModelAdmin):
    form = ExchangeAccountForm
    list_display = ("name", "exchange", "mode", "level", "capital", "per_trade_budget", "max_concurrent_trades",
                    "enabled", "credentials")
    list_filter = ("mode", "exchange", "enabled", "level")
    readonly_fields = ("credentials",)

    @admin.display(description="Credentials")
    def credentials(self, obj: ExchangeAccount) -> str:
        return credentials_source(obj)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("new_api_key"):
            account_store_credentials(
                account=obj, api_key=form.cleaned_data["new_api_key"], api_secret=form.cleaned_data["new_api_secret"]
            )


@admin.register(Signal)
class SignalAdmin(admin.ModelAdmin):
    list_display = ("pair", "timeframe", "bar_time", "zscore", "action")
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
class PairTradeAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "pair", "side", "state", "opened_at", "closed_at", "exit_reason",
                    "realised_pnl", "fees", "funding")
    list_filter = ("state", "side", "exit_reason", "account")
    list_select_related = ("account", "pair__y_instrument", "pair__x_instrument")
    raw_id_fields = ("pair", "entry_signal")
    readonly_fields = ("close_requested_at", "close_requested_by")
    inlines = (OrderInline,)
    date_hierarchy = "created_at"
    actions = ("close_by_hand",)

    @admin.action(description="Close the selected trades (the bot closes them at once, reason: by hand)")
    def close_by_hand(self, request, queryset):
        asked = [trade.pk for trade in queryset if trade_request_close(trade=trade, user=request.user)]
        skipped = queryset.count() - len(asked)
        self.message_user(request, f"Close requested for {len(asked)} trade(s)"
                                   + (f"; {skipped} had already finished" if skipped else "") + ".")


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("client_order_id", "trade", "instrument", "leg", "action", "side", "qty", "filled_qty",
                    "avg_price", "status")
    list_filter = ("status", "action", "leg")
    search_fields = ("client_order_id", "exchange_order_id")
    raw_id_fields = ("trade", "instrument")


@admin.register(Fill)
class FillAdmin(admin.ModelAdmin):
    list_display = ("order", "exchange_fill_id", "qty", "price", "fee", "fee_currency", "filled_at")
    raw_id_fields = ("order",)


@admin.register(FundingPayment)
class FundingPaymentAdmin(admin.ModelAdmin):
    list_display = ("account", "instrument", "trade", "settled_at", "rate", "position_qty", "amount")
    list_filter = ("account",)
    raw_id_fields = ("trade", "instrument")


@admin.register(BotHeartbeat)
class BotHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("account", "beat_at", "status", "worker", "last_tick_ms", "open_trades")


@admin.register(SignalState)
class SignalStateAdmin(admin.ModelAdmin):
    list_display = ("pair", "last_bar_time", "position", "bars_held", "cooldown", "bar_index")
    list_filter = ("position",)
    raw_id_fields = ("pair",)
