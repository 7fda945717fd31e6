"""Reporting API of the execution layer (read-only, plus closing a trade by hand for staff). Accounts are shown
without any credential field."""

from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import (
    DayFilter,
    FilterSet,
    HasPermission,
    MomentFilter,
    StrictInputSerializer,
    api_actor_label,
    check_query_parameters,
    day_end,
    id_filter,
    id_or_name_filter,
    keyset_filter,
    symbol_filter,
)
from execution.models import ExchangeAccount, Fill, FundingPayment, Order, PairTrade
from execution.services.manual import TradeCloseRefused, trade_request_close


class AccountListApi(generics.ListAPIView):
    class AccountListOutputSerializer(serializers.ModelSerializer):
        level = serializers.IntegerField(source="level.number")

        class Meta:
            model = ExchangeAccount
            # An explicit allow-list: a credential column added later can't leak by default.
            fields = ("id", "name", "exchange", "mode", "level", "capital", "per_trade_budget",
                      "max_concurrent_trades", "leverage", "position_mode", "enabled")

    class Filter(FilterSet):
        level = id_filter("level__number")

        class Meta:
            model = ExchangeAccount
            fields = ("mode", "enabled", "exchange")

    serializer_class = AccountListOutputSerializer
    queryset = ExchangeAccount.objects.select_related("level").order_by("id")
    filterset_class = Filter
    ordering_fields = ("id", "name", "capital")


class TradeFilter(FilterSet):
    id_after = keyset_filter()
    account = id_or_name_filter("account")
    pair = id_filter("pair_id", "Pair id")
    symbol = symbol_filter("pair__y_instrument", "pair__x_instrument")
    level = id_filter("account__level__number", "The account's level")
    mode = filters.ChoiceFilter(field_name="account__mode", choices=ExchangeAccount.Mode.choices)
    opened_after = MomentFilter(field_name="opened_at", lookup_expr="gte")
    opened_before = MomentFilter(field_name="opened_at", lookup_expr="lt")
    closed_after = MomentFilter(field_name="closed_at", lookup_expr="gte")
    closed_before = MomentFilter(field_name="closed_at", lookup_expr="lt")
    closed_until = DayFilter(method="filter_closed_until",
                                      help_text="Closed on or before this UTC day, the whole day included (the "
                                                "dashboard's date range; closed_before is a moment, excluded)")

    class Meta:
        model = PairTrade
        fields = ("state", "side", "exit_reason")

    def filter_closed_until(self, queryset, name, value):
        return queryset.filter(closed_at__lt=day_end(value))


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
    ordering_fields = ("id", "opened_at", "closed_at", "realised_pnl", "fees", "funding")


class OrderListApi(generics.ListAPIView):
    class OrderListOutputSerializer(serializers.ModelSerializer):
        symbol = serializers.CharField(source="instrument.symbol")
        account = serializers.CharField(source="trade.account.name")

        class Meta:
            model = Order
            fields = ("id", "trade", "account", "client_order_id", "exchange_order_id", "symbol", "leg", "action",
                      "attempt", "side", "order_type", "qty", "filled_qty", "avg_price", "fee", "status",
                      "reduce_only", "planned_at", "submitted_at", "created_at")

    class Filter(FilterSet):
        id_after = keyset_filter()
        account = id_or_name_filter("trade__account")
        symbol = symbol_filter("instrument")
        pair = id_filter("trade__pair_id", "Pair id")
        created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
        created_before = MomentFilter(field_name="created_at", lookup_expr="lt")

        class Meta:
            model = Order
            fields = ("trade", "status", "action", "side", "leg")

    serializer_class = OrderListOutputSerializer
    queryset = Order.objects.select_related("instrument", "trade__account").order_by("-id")
    filterset_class = Filter
    ordering_fields = ("id", "created_at", "submitted_at")


class FillListApi(generics.ListAPIView):
    class FillListOutputSerializer(serializers.ModelSerializer):
        symbol = serializers.CharField(source="order.instrument.symbol")
        trade = serializers.IntegerField(source="order.trade_id")
        account = serializers.CharField(source="order.trade.account.name")
        side = serializers.CharField(source="order.side")
        action = serializers.CharField(source="order.action")

        class Meta:
            model = Fill
            fields = ("id", "order", "trade", "account", "symbol", "side", "action", "exchange_fill_id", "qty",
                      "price", "fee", "fee_currency", "is_maker", "filled_at")

    class Filter(FilterSet):
        id_after = keyset_filter()
        account = id_or_name_filter("order__trade__account")
        symbol = symbol_filter("order__instrument")
        trade = id_filter("order__trade_id")
        pair = id_filter("order__trade__pair_id", "Pair id")
        filled_after = MomentFilter(field_name="filled_at", lookup_expr="gte")
        filled_before = MomentFilter(field_name="filled_at", lookup_expr="lt")

        class Meta:
            model = Fill
            fields = ("order",)

    serializer_class = FillListOutputSerializer
    queryset = Fill.objects.select_related("order__instrument", "order__trade__account").order_by("-id")
    filterset_class = Filter
    ordering_fields = ("id", "filled_at", "price", "qty")


class FundingListApi(generics.ListAPIView):
    class FundingListOutputSerializer(serializers.ModelSerializer):
        symbol = serializers.CharField(source="instrument.symbol")
        account = serializers.CharField(source="account.name")

        class Meta:
            model = FundingPayment
            fields = ("id", "account", "trade", "symbol", "settled_at", "rate", "position_qty", "mark_price",
                      "amount")

    class Filter(FilterSet):
        id_after = keyset_filter()
        account = id_or_name_filter("account")
        symbol = symbol_filter("instrument")
        pair = id_filter("trade__pair_id", "Pair id")
        settled_after = MomentFilter(field_name="settled_at", lookup_expr="gte")
        settled_before = MomentFilter(field_name="settled_at", lookup_expr="lt")

        class Meta:
            model = FundingPayment
            fields = ("trade",)

    serializer_class = FundingListOutputSerializer
    queryset = FundingPayment.objects.select_related("instrument", "account").order_by("-id")
    filterset_class = Filter
    ordering_fields = ("id", "settled_at", "amount")


class TradeCloseApi(APIView):
    """Ask the account's bot to close an active trade (exit reason "manual"); needs the permission
    ``execution.close_trade``. Answered at once: the close is recorded, and the bot acts on it at its next tick
    even if the wake-up message can't be sent (the broker down). 409 when there is nothing to close or nothing to
    close it (the account is disabled: its bot does not run; audited as refused). The body takes no field."""

    permission_classes = (HasPermission("execution.close_trade"),)

    class TradeCloseInputSerializer(StrictInputSerializer):
        pass

    @extend_schema(request=None, responses={202: inline_serializer("TradeCloseOutput", {
        "id": serializers.IntegerField(), "state": serializers.CharField(),
        "close_requested_at": serializers.DateTimeField()}), 409: None})
    def post(self, request, pk: int):
        check_query_parameters(request, (), paginated=False)  # a write reads its body: ?dry_run=1 is refused
        self.TradeCloseInputSerializer(data=request.data).is_valid(raise_exception=True)
        trade = get_object_or_404(PairTrade.objects.select_related("account"), pk=pk)
        try:
            active = trade_request_close(trade=trade, user=request.user, channel="api",
                                          actor_label=api_actor_label(request))
        except TradeCloseRefused as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        if not active:
            return Response({"detail": f"trade {trade.pk} is already {trade.state}: nothing to close"},
                            status=status.HTTP_409_CONFLICT)
        trade.refresh_from_db()
        return Response({"id": trade.pk, "state": trade.state, "close_requested_at": trade.close_requested_at},
                        status=status.HTTP_202_ACCEPTED)
