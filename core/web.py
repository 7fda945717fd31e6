"""Who a web request came from, for what counts attempts by address (django-axes' lock-out, the API's throttle)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    """The client's address (``AXES_CLIENT_IP_CALLABLE``). Behind our own reverse proxy (``BEHIND_TLS_PROXY``) every
    request's REMOTE_ADDR is the proxy's: a stranger's wrong passwords locked that one address, so nobody could log
    in. There it is the last X-Forwarded-For entry, the one the proxy appended (entries before it are the client's
    own word); without the proxy, or without a readable entry, REMOTE_ADDR."""
    remote = request.META.get("REMOTE_ADDR")
    if not getattr(settings, "BEHIND_TLS_PROXY", False):
        return remote
    last = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:  # absent, or not an address (a proxy that writes "unknown"): the proxy's, as before
        return remote
