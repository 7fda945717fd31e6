"""Reporting API of the execution layer (read-only, plus closing a trade by hand for staff). Accounts are shown
without any credential field."""

from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import HasPermission
from execution.models import ExchangeAccount, Order, PairTrade
from execution.services.manual import trade_request_close


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


class TradeCloseApi(APIView):
    """Ask the account's bot to close an active trade (exit reason "manual"); needs the permission
    ``execution.close_trade``. Answered at once: the close is recorded, and the bot acts on it at its next tick
    even if the wake-up message can't be sent (the broker down)."""

    permission_classes = (HasPermission("execution.close_trade"),)

    @extend_schema(request=None, responses={202: inline_serializer("TradeCloseOutput", {
        "id": serializers.IntegerField(), "state": serializers.CharField(),
        "close_requested_at": serializers.DateTimeField()}), 409: None})
    def post(self, request, pk: int):
        trade = get_object_or_404(PairTrade, pk=pk)
        if not trade_request_close(trade=trade, user=request.user, channel="api"):
            return Response({"detail": f"trade {trade.pk} is already {trade.state}: nothing to close"},
                            status=status.HTTP_409_CONFLICT)
        trade.refresh_from_db()
        return Response({"id": trade.pk, "state": trade.state, "close_requested_at": trade.close_requested_at},
                        status=status.HTTP_202_ACCEPTED)
