"""What every API view of the apps shares: permission classes by permission name, and bounded pagination.

Reading needs the ``monitoring.read_api`` permission (the roles viewer, reporting, trader, admin); a write needs the
permission of what it changes (``HasPermission("execution.close_trade")``). The permission names are strings, so
the apps on lower floors never import the app that defines them.
"""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission

READ_API = "monitoring.read_api"


class CanReadReports(BasePermission):
    """An authenticated user whose role may read the reporting API."""

    message = "Your account may not read the reporting API (role viewer, reporting, trader or admin needed)."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(READ_API))


def HasPermission(permission: str) -> type[BasePermission]:
    """A permission class that requires ``permission`` (``app_label.codename``) besides reading the API."""

    class _HasPermission(BasePermission):
        message = f"This needs the permission {permission}."

        def has_permission(self, request, view) -> bool:
            user = request.user
            return bool(user and user.is_authenticated and user.has_perm(READ_API) and user.has_perm(permission))

    _HasPermission.__name__ = f"Has_{permission.replace('.', '_')}"
    return _HasPermission


class BoundedPagination(LimitOffsetPagination):
    """``?limit=&offset=``, 100 rows by default and never more than MAX_PAGE_SIZE, whatever a client asks."""

    default_limit = 100
    max_limit = 1000


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
