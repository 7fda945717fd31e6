"""The query-parameter filters every list of the API shares (re-exported by core.api, where the apps read them).

One rule each, whatever the list: a value that can't mean anything answers 400 naming its parameter instead of being
ignored (a boolean is true/false/1/0, a moment lies between EARLIEST and LATEST, an account is an id if such an id
exists, else a name), and an ordering always ends with the primary key, so paging never skips nor repeats a row.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.db import models
from django.db.models import Q
from django_filters import fields as filter_fields
from django_filters import rest_framework as filters
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

# Crypto perpetuals began in 2016; a moment outside these bounds is a typo (9999-12-31), and the bounds keep every
# date arithmetic (a whole end day added, a time zone removed) inside Python's calendar. The API's filters and the
# performance scopes (monitoring.scopes) share them.
EARLIEST = datetime(2010, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
BOUNDS_MESSAGE = f"a moment between {EARLIEST.year} and {LATEST.year} is expected"

# The keyset parameter of the append-only lists (trades, orders, fills, funding): rows with a larger id, oldest
# first, and a next link that carries on from the page's last id (BoundedPagination).
KEYSET_PARAMETER = "id_after"


def bounded_moment(moment: datetime) -> datetime:
    """``moment`` in UTC (UTC when naive); ValueError when it lies outside [EARLIEST, LATEST]."""
    try:
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError as error:  # 0001-01-01T00:00:00+05:00 is before the year 1 in UTC
        raise ValueError(BOUNDS_MESSAGE) from error
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(BOUNDS_MESSAGE)
    return moment


class BoundedIsoDateTimeField(filter_fields.IsoDateTimeField):
    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return bounded_moment(moment)
        except ValueError as error:
            raise forms.ValidationError(str(error), code="out_of_range") from error


class BoundedDateField(forms.DateField):
    # ISO 8601 only, as every other date of the API: Django's own input formats also read 01/02/2024 as the 2nd of
    # January (US), the 1st of February to most of the world.
    input_formats = ["%Y-%m-%d"]
    default_error_messages = {"invalid": "an ISO 8601 date (2024-03-01) is expected"}

    def to_python(self, value):
        day = super().to_python(value)
        if day is not None and not EARLIEST.date() <= day <= LATEST.date():
            raise forms.ValidationError(BOUNDS_MESSAGE, code="out_of_range")
        return day


class MomentFilter(filters.IsoDateTimeFilter):
    """An ISO 8601 date-time (UTC when naive) between EARLIEST and LATEST; out of them a 400 naming the filter."""

    field_class = BoundedIsoDateTimeField


class DayFilter(filters.DateFilter):
    """An ISO 8601 date between EARLIEST and LATEST; out of them a 400 naming the filter."""

    field_class = BoundedDateField


def day_end(day: date) -> datetime:
    """The first moment after the UTC day ``day`` (a DayFilter's day: never beyond LATEST + 1 day)."""
    return datetime.combine(day, time.min, tzinfo=UTC) + timedelta(days=1)


class StrictBooleanField(forms.Field):
    TRUE, FALSE = ("true", "1"), ("false", "0")

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        # The value goes in as a parameter, not into the message: django-filter %-formats every message, and a
        # "%" in the value ("?active=100%") raised TypeError, a 500.
        raise forms.ValidationError("true or false (1 or 0) is expected, not %(value)s", code="invalid",
                                    params={"value": repr(str(value)[:40])})


class StrictBooleanFilter(filters.BooleanFilter):
    """true/false/1/0 and nothing else: django-filter's own BooleanFilter drops "yes" silently, unfiltered."""

    field_class = StrictBooleanField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.TextInput)
        super().__init__(*args, **kwargs)


class FilterSet(filters.FilterSet):
    """The base of every list's filters: a model's boolean and date-time fields get the strict filters above."""

    FILTER_DEFAULTS = {
        **filters.FilterSet.FILTER_DEFAULTS,
        models.BooleanField: {"filter_class": StrictBooleanFilter},
        models.DateTimeField: {"filter_class": MomentFilter},
        models.DateField: {"filter_class": DayFilter},
    }


def keyset_filter() -> filters.NumberFilter:
    return filters.NumberFilter(
        field_name="id", lookup_expr="gt", min_value=0, max_value=2**62, decimal_places=0,
        help_text="Keyset paging for reporting tools: rows with a larger id, in ascending id order; the next link "
                  "carries on from the page's last id, so rows added meanwhile are neither repeated nor missed "
                  "(no ordering, no offset)")


class StableOrderingFilter(OrderingFilter):
    """``?ordering=`` with the primary key appended (in the direction of the last key): rows that tie on the asked
    fields come in one fixed order, so limit/offset pages neither skip nor repeat them (MariaDB returns ties in any
    order). With ``id_after`` (keyset paging) the order is the id's, ascending."""

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if not ordering:
            return ordering
        terms = list(ordering)
        if not any(term.lstrip("-") in ("pk", queryset.model._meta.pk.name) for term in terms):
            terms.append("-pk" if terms[-1].startswith("-") else "pk")
        return terms

    def filter_queryset(self, request, queryset, view):
        if request.query_params.get(KEYSET_PARAMETER) not in (None, ""):
            if request.query_params.get(self.ordering_param):
                raise ValidationError({self.ordering_param: [
                    f"{KEYSET_PARAMETER} pages in ascending id order: leave {self.ordering_param} out"]})
            return queryset.order_by("pk")
        return super().filter_queryset(request, queryset, view)


def _related_model(model, path: str):
    for part in path.split("__"):
        model = model._meta.get_field(part).related_model
    return model


def by_id_or_name(queryset, value, *, name_field: str = "name"):
    """The row of ``queryset`` named by ``value``: an all-digit value is an id if such an id exists, else a name
    (an account named "2" is reached by name only while no account has the id 2). None when there is none. The one
    rule of the API, the dashboard and the kill switch."""
    text = str(value).strip()
    if text.isascii() and text.isdigit() and len(text) <= 18:  # "²".isdigit() is True, int("²") fails
        found = queryset.filter(pk=int(text)).first()
        if found is not None:
            return found
    return queryset.filter(**{name_field: text}).first()


def id_or_name_filter(field: str, *, name_field: str = "name", help_text: str = "") -> filters.CharFilter:
    """A filter on a foreign key given by id or by name (by_id_or_name): ``?account=3`` or ``?account=bybit-main``.
    The row is read first, so the list filters on its own column (an index) rather than through a join."""

    def method(queryset, name, value):
        related = _related_model(queryset.model, field)
        found = by_id_or_name(related.objects.all(), value, name_field=name_field)
        if found is None:
            # A typo in a reporting tool must not read as "nothing happened": 400, naming the parameter.
            raise ValidationError({name: [f"no {related._meta.verbose_name} with id or {name_field} {value!r}"]})
        return queryset.filter(**{field: found.pk})

    return filters.CharFilter(method=method, help_text=help_text or (
        f"{field} id or {name_field} (digits: the id if there is one, else the {name_field})"))


def symbol_filter(*prefixes: str) -> filters.CharFilter:
    """A filter on an instrument symbol reached through any of ``prefixes`` (e.g. a pair's two legs)."""

    def method(queryset, _name, value):
        condition = Q()
        for prefix in prefixes:
            condition |= Q(**{f"{prefix}__symbol": value.upper()})
        return queryset.filter(condition)

    return filters.CharFilter(method=method, help_text="Instrument symbol, e.g. BTCUSDT")


def id_filter(field: str, help_text: str = "") -> filters.NumberFilter:
    """A filter on a whole-number id, bounded so that no value can overflow a database integer."""
    return filters.NumberFilter(field_name=field, min_value=0, max_value=2**62, decimal_places=0,
                                help_text=help_text or f"{field} (an id)")
