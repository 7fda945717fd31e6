"""Read-only reporting API of the execution layer. Accounts are shown without any credential field."""

from django_filters import rest_framework as filters
from rest_framework import generics, serializers

from execution.models import ExchangeAccount, Order, PairTrade


class AccountListApi(generics.ListAPIView):
    class AccountListOutputSerializer(serializers.ModelSerializer):
        level = serializers.IntegerField(source="level.number")

        class Meta:
            model = ExchangeAccount
            # An explicit allow-list: a credential column added later can't leak by default.
            fields = ("id", "name", "exchange", "mode", "level", "capital", "per_trade_budget",
                      "max_concurrent_trades", "leverage", "position_mode", "enabled")

    serializer_class = AccountListOutputSerializer
    queryset = ExchangeAccount.objects.select_related("level").order_by("id")
    pagination_class = None


class TradeFilter(filters.FilterSet):
    closed_after = filters.IsoDateTimeFilter(field_name="closed_at", lookup_expr="gte")
    closed_before = filters.IsoDateTimeFilter(field_name="closed_at", lookup_expr="lt")

    class Meta:
        model = PairTrade
        fields = ("account", "state", "side", "exit_reason")


class TradeOrderOutputSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="instrument.symbol")

    class Meta:
        model = Order
        fields = ("client_order_id", "symbol", "leg", "action", "side", "qty", "filled_qty", "avg_price", "fee",
                  "status", "reduce_only")


class TradeListApi(generics.ListAPIView):
    class TradeListOutputSerializer(serializers.ModelSerializer):
        y = serializers.CharField(source="pair.y_instrument.symbol")
        x = serializers.CharField(source="pair.x_instrument.symbol")
        account = serializers.CharField(source="account.name")
        orders = TradeOrderOutputSerializer(many=True, read_only=True)

        class Meta:
            model = PairTrade
            fields = ("id", "account", "y", "x", "side", "state", "hedge_ratio", "entry_zscore", "exit_zscore",
                      "y_qty", "x_qty", "opened_at", "closed_at", "exit_reason", "realised_pnl", "fees", "funding",
                      "orders")

    serializer_class = TradeListOutputSerializer
    queryset = (
        PairTrade.objects.select_related("account", "pair__y_instrument", "pair__x_instrument")
        .prefetch_related("orders__instrument")
        .order_by("-id")
    )
    filterset_class = TradeFilter
