"""Read-only reporting API of the selection layer."""

from django_filters import rest_framework as filters
from rest_framework import generics, serializers

from pairs.models import Level, Pair
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


class PairFilter(filters.FilterSet):
    level = filters.NumberFilter(field_name="level__number")
    symbol = filters.CharFilter(method="filter_symbol")

    class Meta:
        model = Pair
        fields = ("status", "timeframe", "level", "level_locked")

    def filter_symbol(self, queryset, name, value):
        return queryset.filter(y_instrument__symbol=value) | queryset.filter(x_instrument__symbol=value)


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
