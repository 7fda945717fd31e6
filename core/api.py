"""What every API view of the apps shares: permission classes by permission name, and bounded pagination.

Reading needs the ``monitoring.read_api`` permission (the roles viewer, reporting, trader, admin); a write needs the
permission of what it changes (``HasPermission("execution.close_trade")``). The permission names are strings, so
the apps on lower floors never import the app that defines them.
"""

from __future__ import annotations

import csv
import io
import json

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.utils.urls import remove_query_param, replace_query_param

# The shared filters live beside this module (core.api_filters); the apps read them from here.
from core.api_filters import (  # noqa: F401
    EARLIEST,
    KEYSET_PARAMETER,
    LATEST,
    DayFilter,
    FilterSet,
    MomentFilter,
    StableOrderingFilter,
    StrictBooleanFilter,
    bounded_moment,
    by_id_or_name,
    day_end,
    id_filter,
    id_or_name_filter,
    keyset_filter,
    symbol_filter,
)
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


def api_actor_label(request) -> str:
    """Who acted over the API, for the audit: the user and the token's key (its public prefix, as the token's own
    audit names it when it is created), so that after a leak the changes one token made can be told from those of the
    user's other tokens (a Power BI, a script) and of a browser session."""
    key = getattr(request.auth, "token_key", None)
    return f"{request.user.get_username()} via " + (f"API token {key}" if key else "a session")


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
            audit_record(action="refused", channel="api", actor=user, actor_label=api_actor_label(request),
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

    def get_limit(self, request):
        limit = _whole_number(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        offset = _whole_number(request, self.offset_query_param, minimum=0) or 0
        if offset and request.query_params.get(KEYSET_PARAMETER) not in (None, ""):
            raise ValidationError({self.offset_query_param: [
                f"{KEYSET_PARAMETER} pages by id: leave {self.offset_query_param} out"]})
        return offset

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
        self.last_pk = rows[-1].pk if rows and hasattr(rows[-1], "pk") else None
        return rows

    def get_next_link(self):
        if not self.has_next:
            return None
        url = replace_query_param(self.request.build_absolute_uri(), self.limit_query_param, self.limit)
        if self.request.query_params.get(KEYSET_PARAMETER) not in (None, ""):
            # Keyset paging: on from the page's last id, whatever was added or removed meanwhile.
            return replace_query_param(remove_query_param(url, self.offset_query_param), KEYSET_PARAMETER,
                                       self.last_pk)
        return replace_query_param(url, self.offset_query_param, self.offset + self.limit)

    def get_previous_link(self):
        if self.request.query_params.get(KEYSET_PARAMETER) not in (None, ""):
            return None  # a keyset page knows where it goes, not where it came from
        return super().get_previous_link()

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

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:  # what get_limit and get_offset accept; anything else is a 400
            parameter["schema"]["minimum"] = 1 if parameter["name"] == self.limit_query_param else 0
        return parameters

    def get_paginated_response_schema(self, schema):
        answer = super().get_paginated_response_schema(schema)
        answer["properties"]["count"].update(
            nullable=True, description=f"Rows in the whole list; null when more than {self.COUNT_LIMIT:,}")
        return answer


def _whole_number(request, name: str, *, minimum: int) -> int | None:
    """The query parameter ``name`` as a whole number of at least ``minimum``; None when absent or empty. Anything
    else answers 400 naming it: ``?limit=abc`` must not quietly become 100 rows."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    text = raw.strip()
    digits = text.lstrip("0") or "0"
    # More than 19 digits is beyond any limit and MAX_OFFSET (clamped, or an empty page), and never parsed whole.
    value = (int(digits) if len(digits) <= 19 else 10**19) if text.isascii() and text.isdigit() else None
    if value is None or value < minimum:
        raise ValidationError({name: [f"a whole number of at least {minimum} is expected, not {raw[:40]!r}"]})
    return value


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


def check_query_parameters(request, allowed, *, paginated: bool = True) -> None:
    """Raise a 400 naming every query parameter of ``request`` not in ``allowed`` (nor format, nor pagination's
    unless the answer is not ``paginated``: a limit that limits nothing must not read as if it did)."""
    unknown = sorted(set(request.query_params) - set(allowed)
                     - set(PAGINATION_PARAMETERS if paginated else ("format",)))
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

def _flatten(row, prefix: str = "", json_columns: frozenset[str] = frozenset()) -> dict:
    flat: dict = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if name in json_columns:  # free-form JSON (a guard event's details): one cell, the same columns every page
            flat[name] = None if value is None else json.dumps(value, default=str, sort_keys=True)
        elif isinstance(value, dict):
            flat.update(_flatten(value, f"{name}.", json_columns))
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
    """A list (or one page of it) as CSV, one row per item; nested objects become dotted columns, nested lists and
    free-form JSON fields a JSON cell. A list's columns are its serializer's, empty or not, page after page; an
    object (an error, a summary) is one row."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            data = data["results"]
        # A list has its serializer's columns (an empty one too: a reporting tool reads them from the header).
        columns, json_columns = _serializer_columns(renderer_context) if isinstance(data, list) else ([], set())
        json_columns = frozenset(json_columns)
        rows = [{key: _cell(value) for key, value in (_flatten(item, "", json_columns) if isinstance(item, dict)
                                                       else {"value": item}).items()}
                for item in (data if isinstance(data, list) else [data or {}])]
        for row in rows:
            columns += [key for key in row if key not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode(self.charset)


def _serializer_columns(renderer_context) -> tuple[list[str], set[str]]:
    """The columns of the view's serializer (what its rows have: nested objects dotted) and which of them are
    free-form JSON; none when the view has no serializer to ask."""
    view = (renderer_context or {}).get("view")
    try:
        if hasattr(view, "get_serializer"):
            serializer = view.get_serializer()
        elif getattr(view, "serializer_class", None) is not None:
            serializer = view.serializer_class()
        else:
            return [], set()
        columns: list[str] = []
        json_columns: set[str] = set()
        _serializer_layout(serializer, "", columns, json_columns)
        return columns, json_columns
    except (AssertionError, AttributeError, KeyError, TypeError):  # no serializer to ask: no header, no error
        return [], set()


def _serializer_layout(serializer, prefix: str, columns: list[str], json_columns: set[str]) -> None:
    for name, field in serializer.fields.items():
        if field.write_only:
            continue
        path = f"{prefix}{name}"
        if isinstance(field, serializers.Serializer):
            _serializer_layout(field, f"{path}.", columns, json_columns)
            continue
        columns.append(path)
        if isinstance(field, serializers.JSONField | serializers.DictField | serializers.HStoreField):
            json_columns.add(path)


class StrictBooleanInput(serializers.BooleanField):
    """A write's true/false: true/false/1/0 as the query parameters take them (DRF's own also reads "yes", "on",
    "y": ``flatten=yes`` must not be a flatten by accident of spelling while ``?flatten=yes`` is refused)."""

    TRUE_VALUES = {"true", "True", "TRUE", "1", True}
    FALSE_VALUES = {"false", "False", "FALSE", "0", False}


class StrictInputSerializer(serializers.Serializer):
    """The base of every API write's input: a field it doesn't know answers 400 naming it (``acount=`` must not
    halt every account)."""

    IGNORED = ("csrfmiddlewaretoken",)  # the browsable API's form posts it beside the fields

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields) - set(self.IGNORED))
            if unknown:
                known = ", ".join(self.fields) or "no field"
                raise ValidationError({name: [f"unknown field (this takes {known})"] for name in unknown})
        return super().to_internal_value(data)
