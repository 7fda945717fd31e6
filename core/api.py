"""What every API view of the apps shares: permission classes by permission name, and bounded pagination.

Reading needs the ``monitoring.read_api`` permission (the roles viewer, reporting, trader, admin); a write needs the
permission of what it changes (``HasPermission("execution.close_trade")``). The permission names are strings, so
the apps on lower floors never import the app that defines them.
"""

from __future__ import annotations

import csv
import io
import json

from django.db.models import Q
from django_filters import rest_framework as filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.utils.urls import replace_query_param

from core.audit import audit_record
from core.db import count_up_to, page_rows
from core.permissions import READ_API  # the apps' API modules read it from here too


def readable_errors(detail) -> str:
    """A form's errors as a person reads them ("mode: "xyz" is not a valid choice."), not as Python shows them."""
    if isinstance(detail, dict):
        return "; ".join(f"{name}: {readable_errors(value)}" for name, value in detail.items())
    if isinstance(detail, list | tuple):
        return " ".join(readable_errors(item) for item in detail)
    return str(detail)


class CanReadReports(BasePermission):
    """An authenticated user whose role may read the reporting API."""

    message = "Your account may not read the reporting API (role viewer, reporting, trader or admin needed)."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(READ_API))


def HasPermission(permission: str) -> type[BasePermission]:
    """A permission class that requires ``permission`` (``app_label.codename``) besides reading the API. It guards
    the API's changes: a signed-in user refused one is audited (action ``refused``)."""

    class _HasPermission(BasePermission):
        message = f"This needs the permission {permission}."

        def has_permission(self, request, view) -> bool:
            user = request.user
            if not (user and user.is_authenticated):
                return False  # 401: nobody to name
            if user.has_perm(READ_API) and user.has_perm(permission):
                return True
            # The request as it came: the browsable API asks this of a copy with the method of a form it might
            # show (a GET of the page is no attempt to change anything).
            if getattr(request, "_request", request).method in SAFE_METHODS:
                return False
            audit_record(action="refused", channel="api", actor=user,
                         summary=f"{request.method} {request.path} refused: {user.get_username()} lacks the "
                                 f"permission {permission if user.has_perm(READ_API) else READ_API}",
                         details={"method": request.method, "path": request.path})
            return False

    _HasPermission.__name__ = f"Has_{permission.replace('.', '_')}"
    return _HasPermission


class BoundedPagination(LimitOffsetPagination):
    """``?limit=&offset=``, 100 rows by default and never more than ``max_limit``, whatever a client asks.

    The page reads one row more than it shows, to know whether a next page exists; ``count`` is exact up to
    COUNT_LIMIT rows and null beyond (counting a million trades on every page costs more than the page itself).
    """

    default_limit = 100
    max_limit = 1000
    # Counting 10,001 rows at most: a few milliseconds on an index, whatever the table's size.
    COUNT_LIMIT = 10_000
    # No list has a trillion rows; a larger offset would overflow a database integer: an empty page.
    MAX_OFFSET = 10**12

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        if self.offset > self.MAX_OFFSET:
            rows, self.has_next = [], False
        else:
            rows, self.has_next = page_rows(queryset, self.offset, self.limit)
        if self.offset == 0 and not self.has_next:
            self.count = len(rows)
        else:
            self.count = count_up_to(queryset, self.COUNT_LIMIT)
        self.display_page_controls = self.count is not None and self.count > self.limit
        return rows

    def get_next_link(self):
        if not self.has_next:
            return None
        url = replace_query_param(self.request.build_absolute_uri(), self.limit_query_param, self.limit)
        return replace_query_param(url, self.offset_query_param, self.offset + self.limit)

    def get_paginated_response(self, data):
        """The page, and the same paging in headers (``Link: <next>; rel="next"``, ``X-Total-Count`` when
        counted): a CSV export has no room for ``next`` and ``count``, and must not look complete when it isn't."""
        response = super().get_paginated_response(data)
        next_link = self.get_next_link()
        if next_link:
            response["Link"] = f'<{next_link}>; rel="next"'
        if self.count is not None:
            response["X-Total-Count"] = str(self.count)
        return response

    def get_paginated_response_schema(self, schema):
        answer = super().get_paginated_response_schema(schema)
        answer["properties"]["count"].update(
            nullable=True, description=f"Rows in the whole list; null when more than {self.COUNT_LIMIT:,}")
        return answer


ERROR_RESPONSES = {
    "400": "A parameter is not valid; the body names which and why.",
    "401": "No valid API token (header \"Authorization: Token <token>\") nor session.",
    "403": "The user's role does not allow this.",
    "429": "Too many requests; the Retry-After header says when to try again.",
}


def document_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: every operation documents the errors every operation can answer, so
    the schema a reporting tool reads (and the fuzz test checks answers against) is the whole truth."""
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_RESPONSES.items():
                responses.setdefault(code, {"description": description})
            if "{" in path:
                responses.setdefault("404", {"description": "No such object."})
    return result


# --- query parameters: an unknown one is refused, not ignored ------------------------------------------------------

PAGINATION_PARAMETERS = ("limit", "offset", "format")


def check_query_parameters(request, allowed) -> None:
    """Raise a 400 naming every query parameter of ``request`` not in ``allowed`` (nor pagination or format)."""
    unknown = sorted(set(request.query_params) - set(allowed) - set(PAGINATION_PARAMETERS))
    if unknown:
        raise ValidationError({name: ["unknown query parameter"] for name in unknown})
    check_format(request)


def check_format(request) -> None:
    """A ``?format=`` no renderer serves answers 400 (after authentication: see FormatAfterAuthNegotiation)."""
    wanted = request.query_params.get("format")
    renderer = getattr(request, "accepted_renderer", None)
    if wanted is not None and renderer is not None and renderer.format != wanted:
        raise ValidationError({"format": [f"unknown format {wanted!r}: json or csv"]})


class FormatAfterAuthNegotiation(DefaultContentNegotiation):
    """DRF answers an unknown ``?format=`` with 404 before it asks who is calling; here the renderers are kept and
    the views refuse the format with a 400 once the caller is known, so an anonymous request always gets 401."""

    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        return matching or renderers


class StrictQueryParameters(BaseFilterBackend):
    """First filter backend of every list: a parameter no filter, ordering or pagination reads answers 400, so a
    report is never silently unfiltered (``?symbl=BTCUSDT``)."""

    def filter_queryset(self, request, queryset, view):
        allowed = set(getattr(view, "extra_query_parameters", ()))
        filterset_class = DjangoFilterBackend().get_filterset_class(view, queryset)
        if filterset_class is not None:
            allowed |= set(filterset_class.base_filters)
        if getattr(view, "ordering_fields", None):
            allowed.add(OrderingFilter.ordering_param)
            _check_ordering(request, view.ordering_fields)
        check_query_parameters(request, allowed)
        return queryset


def _check_ordering(request, fields) -> None:
    """``?ordering=`` names fields the list can be ordered by (DRF drops the others silently: a report would come
    back in an order nobody asked for)."""
    asked = request.query_params.get(OrderingFilter.ordering_param)
    if not asked or fields == "__all__":
        return
    unknown = [term.strip() for term in asked.split(",") if term.strip().lstrip("-") not in fields]
    if unknown:
        raise ValidationError({OrderingFilter.ordering_param: [
            f"unknown field {', '.join(repr(t) for t in unknown)}: one of {', '.join(fields)} (- for descending)"]})


# --- CSV: every list reads as a table (?format=csv) for Excel and Power BI -----------------------------------------

def _flatten(row, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


# A cell starting with one of these is a formula to Excel (and to what imports CSV like it): text a user stored (a
# halt's reason, a note) must not become one in a reporting user's spreadsheet.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """``value`` as a CSV cell: text that a spreadsheet would run as a formula is quoted with a leading apostrophe;
    numbers (the API gives decimals as text, "-12.5") stay numbers."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


class CsvRenderer(BaseRenderer):
    """A list (or one page of it) as CSV, one row per item; nested objects become dotted columns, nested lists a
    JSON cell. An object (an error, a summary) is one row."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            data = data["results"]
        rows = [{key: _cell(value) for key, value in (_flatten(item) if isinstance(item, dict) else
                                                       {"value": item}).items()}
                for item in (data if isinstance(data, list) else [data or {}])]
        columns: list[str] = []
        for row in rows:
            columns += [key for key in row if key not in columns]
        if not rows:  # an empty list still has its header: a reporting tool reads the columns from it
            columns = _serializer_columns(renderer_context)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode(self.charset)


def _serializer_columns(renderer_context) -> list[str]:
    """The top-level fields of the view's serializer (what the rows would have had), or none."""
    view = (renderer_context or {}).get("view")
    try:
        return list(view.get_serializer().fields) if hasattr(view, "get_serializer") else []
    except (AssertionError, AttributeError, KeyError, TypeError):  # no serializer to ask: no header, no error
        return []


def _related_model(model, path: str):
    for part in path.split("__"):
        model = model._meta.get_field(part).related_model
    return model


def id_or_name_filter(field: str, *, name_field: str = "name", help_text: str = "") -> filters.CharFilter:
    """A filter on a foreign key given by id (digits) or by name: ``?account=3`` or ``?account=bybit-main``. The
    matching ids are read first, so the list filters on its own column (an index) rather than through a join."""

    def method(queryset, name, value):
        condition = Q(**{name_field: value})
        if str(value).isascii() and str(value).isdigit():
            condition |= Q(pk=int(value))
        related = _related_model(queryset.model, field)
        ids = list(related.objects.filter(condition).values_list("pk", flat=True))
        if not ids:
            # A typo in a reporting tool must not read as "nothing happened": 400, naming the parameter.
            raise ValidationError({name: [f"no {related._meta.verbose_name} with id or {name_field} {value!r}"]})
        return queryset.filter(**{f"{field}__in": ids})

    return filters.CharFilter(method=method, help_text=help_text or f"{field} id or {name_field}")


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
