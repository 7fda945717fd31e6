"""The client's address behind the reverse proxy (core.web.client_address)."""

from __future__ import annotations

import pytest

from core.web import client_address


@pytest.mark.parametrize(("proxy", "forwarded", "expected"), [
    (False, "192.0.2.1", "10.0.0.9"),  # no proxy: the header is the client's own word
    (True, "192.0.2.1", "192.0.2.1"),
    (True, "198.51.100.1, 192.0.2.1", "192.0.2.1"),  # the last entry is the proxy's; the others the client's
    (True, " 2001:db8::1 ", "2001:db8::1"),
    (True, "", "10.0.0.9"),
    (True, "unknown", "10.0.0.9"),
    (True, "192.0.2.1, 999.1.1.1", "10.0.0.9"),
])
def test_client_address(rf, settings, proxy, forwarded, expected):
    settings.BEHIND_TLS_PROXY = proxy
    assert client_address(rf.get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=forwarded)) == expected
