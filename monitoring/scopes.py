"""Reading a performance scope from request parameters, shared by the API and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from rest_framework import serializers

from execution.models import ExchangeAccount
from monitoring.selectors import MixedModesError, Scope, performance_scope
from pairs.models import Pair

SCOPE_PARAMETERS = ("account", "mode", "level", "pair", "start", "end")
# Crypto perpetuals began in 2016; the bounds keep a period's daily curve a few thousand days long at most.
EARLIEST = datetime(2010, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def account_by_id_or_name(value: str) -> ExchangeAccount | None:
    """The account whose id (digits) or name is ``value``; None when there is none."""
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        found = ExchangeAccount.objects.select_related("level").filter(pk=int(text)).first()
        if found is not None:
            return found
    return ExchangeAccount.objects.select_related("level").filter(name=text).first()


def _moment(value: str, *, end: bool) -> datetime:
    """An ISO date (a whole UTC day: an end date includes its day) or an ISO date-time (UTC when naive)."""
    try:
        if len(value) == 10:
            moment = datetime.combine(datetime.fromisoformat(value).date(), time.min, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError) as error:
        raise serializers.ValidationError("an ISO 8601 date (2021-03-01) or date-time is expected") from error
    # In UTC whatever offset it was written with: the days of the curve and its daily returns are UTC days.
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    # Checked before a whole end day is added: 9999-12-31 is out of bounds, not out of Python's calendar.
    if not EARLIEST <= moment <= LATEST:
        raise serializers.ValidationError(f"a moment between {EARLIEST.year} and {LATEST.year} is expected")
    if len(value) == 10 and end:
        moment += timedelta(days=1)
    return moment


class ScopeInputSerializer(serializers.Serializer):
    account = serializers.CharField(required=False, help_text="Account id or name")
    mode = serializers.ChoiceField(choices=ExchangeAccount.Mode.choices, required=False,
                                   help_text="Combine the accounts of this mode (without an account)")
    level = serializers.IntegerField(required=False, min_value=0, max_value=1000, help_text="Level number")
    pair = serializers.IntegerField(required=False, min_value=1, max_value=2**62, help_text="Pair id")
    start = serializers.CharField(required=False, help_text="From this date or date-time (UTC), inclusive")
    end = serializers.CharField(required=False, help_text="Up to this date (inclusive) or date-time (exclusive)")

    def validate_account(self, value):
        account = account_by_id_or_name(value)
        if account is None:
            raise serializers.ValidationError(f"no account with id or name {value!r}")
        return account

    def validate_pair(self, value):
        pair = Pair.objects.select_related("y_instrument", "x_instrument").filter(pk=value).first()
        if pair is None:
            raise serializers.ValidationError(f"no pair {value}")
        return pair

    def validate_start(self, value):
        return _moment(value, end=False)

    def validate_end(self, value):
        return _moment(value, end=True)

    def validate(self, attrs):
        if attrs.get("start") and attrs.get("end") and attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError({"end": "must be after start"})
        try:
            attrs["scope"] = performance_scope(**{k: v for k, v in attrs.items() if k in SCOPE_PARAMETERS})
        except MixedModesError as error:
            raise serializers.ValidationError({"mode": str(error)}) from error
        return attrs


def scope_from_params(params) -> Scope:
    """The scope named by ``params`` (a QueryDict); raises ValidationError for a bad one."""
    data = {k: params.get(k) for k in SCOPE_PARAMETERS if params.get(k) not in (None, "")}
    serializer = ScopeInputSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["scope"]


def dashboard_scope(params) -> Scope:
    """The scope the dashboard shows: the one its parameters name, else the accounts of one mode combined (real
    money first when several modes exist), so the default view never mixes paper with real money."""
    if any(params.get(k) for k in SCOPE_PARAMETERS):
        return scope_from_params(params)
    modes = set(ExchangeAccount.objects.values_list("mode", flat=True).distinct())
    for mode in (ExchangeAccount.Mode.REAL, ExchangeAccount.Mode.DEMO, ExchangeAccount.Mode.PAPER):
        if mode in modes:
            return performance_scope(mode=mode)
    return performance_scope()
