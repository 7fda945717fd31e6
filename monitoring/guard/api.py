"""The kill switch over the API: ``POST /api/v1/halt/`` (permission execution.halt_account) and
``POST /api/v1/resume/`` (permission risk.clear_halt). Both audited."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.utils import html
from rest_framework.views import APIView

from core.api import (
    HasPermission,
    StrictBooleanInput,
    StrictInputSerializer,
    api_actor_label,
    by_id_or_name,
    check_query_parameters,
)
from execution.models import ExchangeAccount
from monitoring.guard.control import accounts_halt, accounts_resume


class AccountRefField(serializers.CharField):
    """An account by id or by name. Left out (or left empty in the browsable API's form) it means every account,
    or the system-wide halts; a JSON ``null`` is refused: a script whose account variable is unset would otherwise
    halt, or flatten, every account, or clear the system-wide halts, instead of acting on the one it meant."""

    default_error_messages = {"null": "null is not an account: leave the field out to mean {scope}"}

    def __init__(self, *, scope: str, **kwargs):
        super().__init__(required=False, allow_null=True, **kwargs)
        self.scope = scope

    def validate_empty_values(self, data):
        if data is None and not html.is_html_input(self.parent.initial_data):
            self.fail("null", scope=self.scope)
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        text = str(super().to_internal_value(data)).strip()
        account = by_id_or_name(ExchangeAccount.objects.all(), text)
        if account is None:
            raise serializers.ValidationError(f"no account with id or name {text!r}")
        return account


class HaltCreateApi(APIView):
    permission_classes = (HasPermission("execution.halt_account"),)

    class HaltCreateInputSerializer(StrictInputSerializer):
        account = AccountRefField(scope="every account", help_text="id or name; omitted: every account")
        flatten = StrictBooleanInput(default=False)
        reason = serializers.CharField(max_length=400, trim_whitespace=True)

    @extend_schema(request=HaltCreateInputSerializer, responses={201: inline_serializer("HaltCreateOutput", {
        "id": serializers.IntegerField(), "account": serializers.CharField(allow_null=True),
        "flatten": serializers.BooleanField(), "mode": serializers.CharField()}), 400: None, 403: None})
    def post(self, request):
        # The fields are the body's: ?account=main beside a body without one halted every account.
        check_query_parameters(request, (), paginated=False)
        data = self.HaltCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        account = data.validated_data.get("account")
        halt = accounts_halt(account=account, flatten=data.validated_data["flatten"],
                             reason=data.validated_data["reason"], user=request.user, channel="api",
                             actor_label=api_actor_label(request))
        return Response({"id": halt.pk, "account": account.name if account else None, "flatten": halt.flatten,
                         "mode": halt.mode}, status=status.HTTP_201_CREATED)


class ResumeApi(APIView):
    permission_classes = (HasPermission("risk.clear_halt"),)

    class ResumeInputSerializer(StrictInputSerializer):
        account = AccountRefField(scope="the system-wide halts", help_text="id or name; omitted: the system-wide "
                                  "halts")

    @extend_schema(request=ResumeInputSerializer, responses={200: inline_serializer("ResumeOutput", {
        "cleared": serializers.IntegerField()}), 400: None, 403: None})
    def post(self, request):
        check_query_parameters(request, (), paginated=False)  # ?account=main cleared the system-wide halts
        data = self.ResumeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cleared = accounts_resume(account=data.validated_data.get("account"), user=request.user, channel="api",
                                  actor_label=api_actor_label(request))
        return Response({"cleared": cleared})
