"""Where an account's requests may go: its REST base URL override must be one of the allowed origins.

An account that could point its base URL anywhere would send its key (and a signature) to whoever listens there;
the allow-list (``STATARB_ALLOWED_BASE_URLS``, Bybit's own domains by default) closes that. Loopback addresses (a
local fake exchange) are allowed only where ``STATARB_ALLOW_LOOPBACK_BASE_URLS`` is on: tests and development.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError


def _origin(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> None:
    """ValidationError (naming the URL and what is allowed) unless ``url`` may carry an account's requests."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"base URL {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValidationError(f"base URL {url!r} must not carry a user name or password")
    if _is_loopback(parts.hostname):
        if settings.STATARB_ALLOW_LOOPBACK_BASE_URLS:
            return
        raise ValidationError(f"base URL {url!r} is a loopback address: allowed only in tests and development "
                              "(STATARB_ALLOW_LOOPBACK_BASE_URLS)")
    allowed = {_origin(u) for u in settings.STATARB_ALLOWED_BASE_URLS}
    if _origin(url) not in allowed:
        raise ValidationError(f"base URL {url!r} is not on the allow-list (STATARB_ALLOWED_BASE_URLS: "
                              f"{', '.join(sorted(allowed))})")
