"""Read-only reporting API of the risk policy: halts and guard events."""

from rest_framework import generics, serializers

from risk.models import GuardEvent, Halt


class GuardEventListApi(generics.ListAPIView):
    class GuardEventListOutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = GuardEvent
            fields = ("id", "created_at", "account", "kind", "severity", "message", "details")

    serializer_class = GuardEventListOutputSerializer
    queryset = GuardEvent.objects.order_by("-id")
    filterset_fields = ("account", "kind", "severity")


class HaltListApi(generics.ListAPIView):
    class HaltListOutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Halt
            fields = ("id", "account", "pair", "mode", "source", "trigger", "reason", "flatten", "until", "created_at",
                      "cleared_at")

    serializer_class = HaltListOutputSerializer
    queryset = Halt.objects.order_by("-id")
    filterset_fields = ("account", "source", "mode", "trigger")
