"""Read-only reporting API of the selection layer."""

from rest_framework import generics, serializers

from core.api import FilterSet, id_filter, symbol_filter
from pairs.models import Level, Pair, PairStatistics
from pairs.selectors import pairs_with_legs


class LevelListApi(generics.ListAPIView):
    class LevelListOutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Level
            fields = ("id", "number", "name", "trades_real_capital", "requires_live_evidence", "min_trades",
                      "min_win_rate", "min_profit_factor", "max_drawdown", "max_qvalue", "min_half_life_bars",
                      "max_half_life_bars", "capital_weight")

    serializer_class = LevelListOutputSerializer
    queryset = Level.objects.all()
    ordering_fields = ("number",)


class PairFilter(FilterSet):
    level = id_filter("level__number", "Level number")
    symbol = symbol_filter("y_instrument", "x_instrument")

    class Meta:
        model = Pair
        fields = ("status", "timeframe", "level", "level_locked")


class PairListApi(generics.ListAPIView):
    class PairListOutputSerializer(serializers.ModelSerializer):
        y = serializers.CharField(source="y_instrument.symbol")
        x = serializers.CharField(source="x_instrument.symbol")
        level = serializers.IntegerField(source="level.number", allow_null=True)

        class Meta:
            model = Pair
            fields = ("id", "y", "x", "timeframe", "status", "level", "level_locked", "hedge_ratio", "intercept",
                      "adf_stat", "adf_lag", "pvalue", "qvalue", "johansen_passed", "half_life_bars", "hurst",
                      "mean_crossings", "spread_mean", "spread_std", "screening_zscore", "return_correlation",
                      "consecutive_failures", "last_tested_at")

    serializer_class = PairListOutputSerializer
    queryset = pairs_with_legs().order_by("id")
    filterset_class = PairFilter
    ordering_fields = ("id", "qvalue", "pvalue", "half_life_bars", "last_tested_at")


class PairStatisticsListApi(generics.ListAPIView):
    class PairStatisticsListOutputSerializer(serializers.ModelSerializer):
        y = serializers.CharField(source="pair.y_instrument.symbol")
        x = serializers.CharField(source="pair.x_instrument.symbol")
        profit_factor_unbounded = serializers.BooleanField(
            read_only=True, help_text="wins and no losing trade: profit_factor is null for +inf")

        class Meta:
            model = PairStatistics
            fields = ("id", "pair", "y", "x", "window", "window_start", "window_end", "computed_at", "trades",
                      "win_rate", "profit_factor", "profit_factor_unbounded", "total_return", "mean_return",
                      "max_drawdown", "sharpe", "sortino", "expectancy", "avg_holding_bars", "recent_adf_stat",
                      "recent_adf_pvalue")

    class Filter(FilterSet):
        pair = id_filter("pair_id", "Pair id")
        symbol = symbol_filter("pair__y_instrument", "pair__x_instrument")
        level = id_filter("pair__level__number", "The pair's level")

        class Meta:
            model = PairStatistics
            fields = ("window",)

    serializer_class = PairStatisticsListOutputSerializer
    queryset = PairStatistics.objects.select_related("pair__y_instrument", "pair__x_instrument").order_by("id")
    filterset_class = Filter
    ordering_fields = ("id", "trades", "profit_factor", "win_rate", "sharpe", "computed_at")
