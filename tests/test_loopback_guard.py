"""The suite's own guard (tests/conftest.py ``only_loopback``): nothing leaves this machine, not even a name
lookup, whatever a test builds."""

from __future__ import annotations

import socket

import pytest

from exchanges.ccxt_client import CcxtExchange, build_ccxt_client


def test_loopback_is_reachable_and_resolvable():
    assert socket.getaddrinfo("127.0.0.1", 80)
    assert socket.getaddrinfo("localhost", 80)


@pytest.mark.parametrize("host", ["api.bybit.com", b"api-demo.bybit.com", "10.255.255.53"])
def test_any_other_host_is_refused_before_it_is_resolved(host):
    with pytest.raises(AssertionError, match="test tried to resolve"):
        socket.getaddrinfo(host, 443)


def test_a_client_left_on_the_exchanges_own_address_fails_before_any_lookup(monkeypatch):
    asked: list[str] = []
    guarded = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (asked.append(host), guarded(host, *a, **k))[1])
    client = CcxtExchange(build_ccxt_client("bybit", enable_rate_limit=False, timeout_ms=1000))

    with pytest.raises(AssertionError, match=r"test tried to resolve .api\.bybit\.com."):
        client.linear_instruments()

    assert asked == ["api.bybit.com"]  # refused by the guard: the resolver was never asked
