"""Reading a performance scope from request parameters, shared by the API and the dashboard."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from rest_framework import serializers

# The bounds of a moment (2010 to 2100) are the API's date filters' too: core.api.bounded_moment.
from core.api import bounded_moment, by_id_or_name
from execution.models import ExchangeAccount
from monitoring.selectors import MixedModesError, Scope, performance_scope
from pairs.models import Level, Pair

SCOPE_PARAMETERS = ("account", "mode", "level", "pair", "start", "end")


def account_by_id_or_name(value: str) -> ExchangeAccount | None:
    """The account ``value`` names: all digits, the account with that id if there is one, else the one of that name
    (core.api.by_id_or_name, the rule of every ``account`` parameter); None when there is none."""
    return by_id_or_name(ExchangeAccount.objects.select_related("level"), value)


def _iso_date(value: str) -> date | None:
    """``value`` as an ISO 8601 date in any of its forms (2021-03-01, 20210301, 2021-W09-1), None when it is not one
    (a date-time)."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _moment(value: str, *, end: bool) -> datetime:
    """An ISO date (a whole UTC day: an end date includes its day) or an ISO date-time (UTC when naive)."""
    day = _iso_date(value)
    try:
        if day is not None:
            moment = datetime.combine(day, time.min, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError) as error:
        raise serializers.ValidationError("an ISO 8601 date (2021-03-01) or date-time is expected") from error
    # In UTC whatever offset it was written with: the days of the curve and its daily returns are UTC days. Checked
    # before a whole end day is added: 9999-12-31 is out of bounds, not out of Python's calendar.
    try:
        moment = bounded_moment(moment)
    except ValueError as error:
        raise serializers.ValidationError(str(error)) from error
    if day is not None and end:
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

    def validate_level(self, value):
        # Like an unknown account or pair: a level that doesn't exist is a typo, not a scope without accounts.
        if not Level.objects.filter(number=value).exists():
            known = ", ".join(str(n) for n in Level.objects.order_by("number").values_list("number", flat=True))
            raise serializers.ValidationError(f"no level {value} (levels: {known or 'none'})")
        return value

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
        _check_account_agrees(attrs)
        try:
            attrs["scope"] = performance_scope(**{k: v for k, v in attrs.items() if k in SCOPE_PARAMETERS})
        except MixedModesError as error:
            raise serializers.ValidationError({"mode": str(error)}) from error
        _check_period(attrs)
        return attrs


def _check_period(attrs) -> None:
    """One end of the period asked for, the other by default (now, a disabled account's last active day, the first
    trade in scope): a period that would end before it starts is a 400 naming the end that was asked for, not
    figures of a period that does not exist."""
    scope = attrs["scope"]
    if scope.start <= scope.end:
        return
    start, end = (f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC" for moment in (scope.start, scope.end))
    if attrs.get("start"):
        raise serializers.ValidationError({"start": (
            f"the period would end before it starts: start {start} is after its end, {end} (now, or the end of the "
            "last active day of accounts that are all disabled); give an end after it")})
    raise serializers.ValidationError({"end": (
        f"the period would end before it starts: end {end} is before the first trade in scope, {start}; give a "
        "start before it")})


def _check_account_agrees(attrs) -> None:
    """One account is its own scope: a ``mode`` or ``level`` beside it that it doesn't have is a contradiction (400),
    not something to ignore."""
    account = attrs.get("account")
    if account is None:
        return
    if attrs.get("mode") and attrs["mode"] != account.mode:
        raise serializers.ValidationError({"mode": f"account {account.name} is {account.mode}, not {attrs['mode']}: "
                                                   "leave mode out with an account"})
    if attrs.get("level") is not None and attrs["level"] != account.level.number:
        raise serializers.ValidationError({"level": f"account {account.name} trades level {account.level.number}, "
                                                    f"not {attrs['level']}: leave level out with an account"})


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
