"""Read-only reporting API of monitoring: daily PnL and performance."""

from dataclasses import asdict

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from execution.models import ExchangeAccount
from monitoring.selectors import performance_summary
from risk.models import DailyPnlSnapshot


class DailyPnlListApi(generics.ListAPIView):
    class DailyPnlListOutputSerializer(serializers.ModelSerializer):
        account = serializers.CharField(source="account.name")

        class Meta:
            model = DailyPnlSnapshot
            fields = ("date", "account", "starting_equity", "ending_equity", "peak_equity", "realised_pnl",
                      "unrealised_pnl", "fees", "funding", "trades_opened", "trades_closed")

    class Filter(filters.FilterSet):
        date_from = filters.DateFilter(field_name="date", lookup_expr="gte")
        date_to = filters.DateFilter(field_name="date", lookup_expr="lte")

        class Meta:
            model = DailyPnlSnapshot
            fields = ("account",)

    serializer_class = DailyPnlListOutputSerializer
    filterset_class = Filter
    queryset = DailyPnlSnapshot.objects.select_related("account").order_by("date", "account_id")


class PerformanceApi(APIView):
    class PerformanceOutputSerializer(serializers.Serializer):
        total_trades = serializers.IntegerField()
        win_rate = serializers.FloatField(allow_null=True)
        profit_factor = serializers.FloatField(allow_null=True)
        realised_pnl = serializers.DecimalField(max_digits=32, decimal_places=12)
        fees = serializers.DecimalField(max_digits=32, decimal_places=12)
        funding = serializers.DecimalField(max_digits=32, decimal_places=12)
        capital = serializers.DecimalField(max_digits=32, decimal_places=12)
        total_return = serializers.FloatField(allow_null=True)
        max_drawdown = serializers.FloatField(allow_null=True)

        def to_representation(self, instance):
            data = super().to_representation(instance)
            # JSON has no infinity: a profit factor with no losing trade is reported as null plus a flag.
            data["profit_factor_unbounded"] = instance["profit_factor"] == float("inf")
            if data["profit_factor_unbounded"]:
                data["profit_factor"] = None
            return data

    @extend_schema(responses=PerformanceOutputSerializer)
    def get(self, request):
        account = None
        if account_id := request.query_params.get("account"):
            account = generics.get_object_or_404(ExchangeAccount, pk=account_id)
        return Response(self.PerformanceOutputSerializer(asdict(performance_summary(account=account))).data)
