"""Read-only reporting API of the risk policy: halts and guard events."""

from rest_framework import generics, serializers

from core.api import FilterSet, MomentFilter, StrictBooleanFilter, id_or_name_filter
from core.market_clock import market_clock
from risk.models import GuardEvent, Halt
from risk.selectors import active_halts


def account_name_field() -> serializers.CharField:
    """The account's name beside its id (the other lists give the name; null: every account)."""
    return serializers.CharField(source="account.name", read_only=True, allow_null=True)


class GuardEventListApi(generics.ListAPIView):
    class GuardEventListOutputSerializer(serializers.ModelSerializer):
        account_name = account_name_field()

        class Meta:
            model = GuardEvent
            fields = ("id", "created_at", "account", "account_name", "kind", "severity", "message", "details")

    serializer_class = GuardEventListOutputSerializer
    class Filter(FilterSet):
        account = id_or_name_filter("account")
        created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
        created_before = MomentFilter(field_name="created_at", lookup_expr="lt")

        class Meta:
            model = GuardEvent
            fields = ("kind", "severity")

    queryset = GuardEvent.objects.select_related("account").order_by("-id")
    filterset_class = Filter
    ordering_fields = ("id", "created_at")


class HaltListApi(generics.ListAPIView):
    class HaltListOutputSerializer(serializers.ModelSerializer):
        account_name = account_name_field()

        class Meta:
            model = Halt
            fields = ("id", "account", "account_name", "pair", "mode", "source", "trigger", "reason", "flatten",
                      "until", "breach_multiple", "created_at", "cleared_at")

    serializer_class = HaltListOutputSerializer
    class Filter(FilterSet):
        account = id_or_name_filter("account")
        active = StrictBooleanFilter(method="in_force", help_text="In force now: not cleared, and latched past the "
                                     "market's clock (a latch that ended is no longer obeyed, even before the guard "
                                     "marks it cleared)")
        created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
        created_before = MomentFilter(field_name="created_at", lookup_expr="lt")

        class Meta:
            model = Halt
            fields = ("source", "flatten", "mode", "trigger")

        def in_force(self, queryset, name, value):
            in_force = active_halts(now=market_clock().now())
            return queryset.filter(pk__in=in_force.values("pk")) if value else queryset.exclude(
                pk__in=in_force.values("pk"))

    queryset = Halt.objects.select_related("account").order_by("-id")
    filterset_class = Filter
    ordering_fields = ("id", "created_at", "cleared_at")
