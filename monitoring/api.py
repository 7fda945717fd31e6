"""Read-only reporting API of monitoring: daily PnL, performance, the equity curve and open positions."""

from dataclasses import asdict

from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.fields import ISO_8601
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from core.api import DayFilter, FilterSet, check_query_parameters, id_or_name_filter
from execution.models import ExchangeAccount
from monitoring.positions import open_positions
from monitoring.scopes import SCOPE_PARAMETERS, ScopeInputSerializer, scope_from_params
from monitoring.selectors import scope_equity, scope_performance
from risk.models import DailyPnlSnapshot

SCOPE_DOC = [
    OpenApiParameter("account", str, description="Account id or name (digits: the id if there is one, else the "
                                                  "name); one account: its own capital"),
    OpenApiParameter("mode", str, enum=[m for m, _ in ExchangeAccount.Mode.choices],
                     description="Without an account: combine the accounts of this mode (never paper with real); "
                                 "with one, a mode it doesn't have is a 400"),
    OpenApiParameter("level", int, description="Without an account: the accounts trading this level; with one, a "
                                               "level it doesn't trade is a 400"),
    OpenApiParameter("pair", int, description="Only this pair's trades (pair id)"),
    OpenApiParameter("start", str, description="From this ISO date or date-time (UTC), inclusive"),
    OpenApiParameter("end", str, description="Up to this ISO date (inclusive) or date-time (exclusive)"),
]


class DailyPnlListApi(generics.ListAPIView):
    class DailyPnlListOutputSerializer(serializers.ModelSerializer):
        account = serializers.CharField(source="account.name")
        mode = serializers.CharField(source="account.mode")

        class Meta:
            model = DailyPnlSnapshot
            fields = ("date", "account", "mode", "starting_equity", "ending_equity", "peak_equity", "realised_pnl",
                      "unrealised_pnl", "fees", "funding", "trades_opened", "trades_closed")

    class Filter(FilterSet):
        account = id_or_name_filter("account")
        mode = filters.ChoiceFilter(field_name="account__mode", choices=ExchangeAccount.Mode.choices)
        date_from = DayFilter(field_name="date", lookup_expr="gte")
        date_to = DayFilter(field_name="date", lookup_expr="lte")

        class Meta:
            model = DailyPnlSnapshot
            fields = ()

    serializer_class = DailyPnlListOutputSerializer
    filterset_class = Filter
    queryset = DailyPnlSnapshot.objects.select_related("account").order_by("date", "account_id")
    ordering_fields = ("date", "realised_pnl", "ending_equity")


class PerformanceApi(APIView):
    """The KPIs of one account, or of the accounts of one mode combined (labelled so), over a period. A combined
    view over accounts of several modes is refused (400): paper is never added to real money."""

    class PerformanceOutputSerializer(serializers.Serializer):
        label = serializers.CharField()
        mode = serializers.CharField(allow_null=True)
        combined = serializers.BooleanField()
        accounts = serializers.ListField(child=serializers.CharField())
        start = serializers.DateTimeField()
        end = serializers.DateTimeField()
        total_trades = serializers.IntegerField()
        wins = serializers.IntegerField()
        losses = serializers.IntegerField()
        win_rate = serializers.FloatField(allow_null=True)
        profit_factor = serializers.FloatField(allow_null=True)
        realised_pnl = serializers.DecimalField(max_digits=32, decimal_places=12)
        fees = serializers.DecimalField(max_digits=32, decimal_places=12)
        funding = serializers.DecimalField(max_digits=32, decimal_places=12)
        capital = serializers.DecimalField(max_digits=32, decimal_places=12)
        total_return = serializers.FloatField(allow_null=True)
        max_drawdown = serializers.FloatField(allow_null=True)
        sharpe = serializers.FloatField(allow_null=True)
        sortino = serializers.FloatField(allow_null=True)
        expectancy = serializers.FloatField(allow_null=True)
        average_win = serializers.FloatField(allow_null=True)
        average_loss = serializers.FloatField(allow_null=True)
        average_holding_hours = serializers.FloatField(allow_null=True)
        exposure = serializers.FloatField(allow_null=True)
        without_result = serializers.IntegerField(
            help_text="Trades closed by reconciliation with no execution to say how (a liquidation, a close by hand "
                      "before the executions' window): no realised PnL, so in none of the figures")
        profit_factor_unbounded = serializers.BooleanField(read_only=True)

        def to_representation(self, instance):
            data = super().to_representation(instance)
            # JSON has no infinity: a profit factor with no losing trade is reported as null plus a flag.
            data["profit_factor_unbounded"] = instance["profit_factor"] == float("inf")
            if data["profit_factor_unbounded"]:
                data["profit_factor"] = None
            return data

    @extend_schema(parameters=SCOPE_DOC, responses=PerformanceOutputSerializer)
    def get(self, request):
        check_query_parameters(request, SCOPE_PARAMETERS, paginated=False)
        summary = scope_performance(scope_from_params(request.query_params))
        return Response(self.PerformanceOutputSerializer(asdict(summary)).data)


def iso_8601_renderer(field: serializers.DateTimeField):
    """``field.to_representation`` for many aware datetimes: the field's time zone resolved once. Falls back to the
    field itself when it has an output format other than ISO 8601."""
    output_format = getattr(field, "format", api_settings.DATETIME_FORMAT)
    if output_format is None or (isinstance(output_format, str) and output_format.lower() != ISO_8601):
        return lambda moment: None if moment is None else field.to_representation(moment)
    zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()

    def render(moment):
        if moment is None:
            return None
        if zone is None or not timezone.is_aware(moment):
            return field.to_representation(moment)
        text = moment.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return render


class EquityListApi(APIView):
    """The equity curve the drawdown is measured on: the capital, then the equity at the end of each UTC day with a
    close or a mark (realised PnL so far plus that day's unrealised PnL), with the drawdown from the running peak
    (a positive fraction)."""

    class EquityOutputSerializer(serializers.Serializer):
        at = serializers.DateTimeField(allow_null=True)
        equity = serializers.FloatField()
        drawdown = serializers.FloatField()

    @extend_schema(parameters=SCOPE_DOC, responses=EquityOutputSerializer(many=True))
    def get(self, request):
        check_query_parameters(request, SCOPE_PARAMETERS, paginated=False)
        points = scope_equity(scope_from_params(request.query_params))
        # One point per day for years: no serializer per point (4x faster), and the time zone looked up once, not
        # per point as DateTimeField.to_representation does (half of the rest); the same ISO 8601 text.
        render = iso_8601_renderer(self.EquityOutputSerializer().fields["at"])
        return Response([{"at": render(p.at), "equity": p.equity, "drawdown": p.drawdown} for p in points])


class PositionListApi(APIView):
    """Open positions: every active trade with both legs' entry and current prices (the newest stored bar), its
    unrealised PnL, the pair's current z against the entry, exit and stop bands, and the hours held."""

    class PositionOutputSerializer(serializers.Serializer):
        class LegOutputSerializer(serializers.Serializer):
            leg = serializers.CharField()
            symbol = serializers.CharField()
            qty = serializers.DecimalField(max_digits=32, decimal_places=12)
            entry_price = serializers.DecimalField(max_digits=32, decimal_places=12, allow_null=True)
            current_price = serializers.DecimalField(max_digits=32, decimal_places=12, allow_null=True)
            unrealised_pnl = serializers.DecimalField(max_digits=32, decimal_places=12, allow_null=True)

        trade = serializers.IntegerField(source="trade.pk")
        account = serializers.CharField(source="trade.account.name")
        mode = serializers.CharField(source="trade.account.mode")
        pair = serializers.IntegerField(source="trade.pair_id")
        side = serializers.CharField(source="trade.side")
        state = serializers.CharField(source="trade.state")
        opened_at = serializers.DateTimeField(source="trade.opened_at", allow_null=True)
        entry_zscore = serializers.FloatField(source="trade.entry_zscore", allow_null=True)
        zscore = serializers.FloatField(allow_null=True)
        zscore_at = serializers.DateTimeField(allow_null=True)
        entry_band = serializers.FloatField(allow_null=True)
        exit_band = serializers.FloatField(allow_null=True)
        stop_band = serializers.FloatField(allow_null=True)
        held_hours = serializers.FloatField(allow_null=True)
        unrealised_pnl = serializers.DecimalField(max_digits=32, decimal_places=12, allow_null=True,
                                                  help_text="Both legs marked to the newest close, before costs")
        fees_paid = serializers.DecimalField(max_digits=32, decimal_places=12, help_text="The fills' fees so far")
        funding = serializers.DecimalField(source="trade.funding", max_digits=32, decimal_places=12,
                                           help_text="Funding received so far (negative: paid)")
        net_pnl = serializers.DecimalField(max_digits=32, decimal_places=12, allow_null=True,
                                           help_text="unrealised_pnl - fees_paid + funding: what the equity counts")
        legs = LegOutputSerializer(many=True)

    class InputSerializer(serializers.Serializer):
        account = serializers.CharField(required=False, help_text="Account id or name")

        def validate_account(self, value):  # a 400 keyed by the parameter, as every list's
            return ScopeInputSerializer().validate_account(value)

    # The CSV's columns when there is no open position (core.api.CsvRenderer reads them from here).
    serializer_class = PositionOutputSerializer

    @extend_schema(parameters=[InputSerializer], responses=PositionOutputSerializer(many=True))
    def get(self, request):
        check_query_parameters(request, ("account",), paginated=False)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        account = params.validated_data.get("account")
        return Response(self.PositionOutputSerializer(open_positions(account=account), many=True).data)
