"""ccxt exceptions mapped to ours (with secrets masked), and the retry of temporary errors."""

from __future__ import annotations

import logging

import ccxt
import pytest

from core import secrets
from exchanges import retry as retry_module
from exchanges.bybit import map_bybit_error
from exchanges.ccxt_client import map_ccxt_error
from exchanges.errors import (
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    OrderOutcomeUnknown,
    PermanentExchangeError,
    RateLimited,
    RefusedTemporarily,
    RequestTimedOut,
    TemporaryExchangeError,
)
from exchanges.retry import RetryingExchange, call_with_retry

# ---------------------------------------------------------------------------------------------------- mapping

# Each ccxt class of the adapter's table, and a few subclasses that reach a row through isinstance.
MAPPING = [
    (ccxt.DuplicateOrderId, DuplicateClientOrderId, False),
    (ccxt.OrderNotFound, OrderNotFound, False),
    (ccxt.InsufficientFunds, InsufficientFunds, False),
    (ccxt.InvalidOrder, InvalidOrder, False),
    (ccxt.OrderImmediatelyFillable, InvalidOrder, False),
    (ccxt.AuthenticationError, AuthenticationFailed, False),
    (ccxt.PermissionDenied, AuthenticationFailed, False),
    (ccxt.AccountSuspended, AuthenticationFailed, False),
    (ccxt.NotSupported, NotSupported, False),
    (ccxt.RateLimitExceeded, RateLimited, True),
    (ccxt.DDoSProtection, RateLimited, True),
    (ccxt.RequestTimeout, RequestTimedOut, True),
    # An answer that doesn't prove what happened: the order may have been executed (looked up, never rejected).
    (ccxt.NetworkError, OrderOutcomeUnknown, True),
    (ccxt.ExchangeNotAvailable, OrderOutcomeUnknown, True),
    (ccxt.OnMaintenance, OrderOutcomeUnknown, True),
    (ccxt.BadResponse, OrderOutcomeUnknown, True),
    (ccxt.ExchangeError, OrderOutcomeUnknown, True),
    (ccxt.BaseError, OrderOutcomeUnknown, True),
    # Refused before anything was applied.
    (ccxt.InvalidNonce, RefusedTemporarily, True),
    (ccxt.BadRequest, InvalidOrder, False),
    (ccxt.BadSymbol, InvalidOrder, False),
]


@pytest.mark.parametrize(("ccxt_type", "ours", "retryable"), MAPPING, ids=[m[0].__name__ for m in MAPPING])
def test_each_ccxt_exception_maps_to_ours(ccxt_type, ours, retryable):
    exc = ccxt_type('bybit {"retCode":10001,"retMsg":"something went wrong"}')

    mapped = map_ccxt_error(exc)

    assert type(mapped) is ours
    assert mapped.retryable is retryable
    assert str(mapped) == f'{ccxt_type.__name__}: bybit {{"retCode":10001,"retMsg":"something went wrong"}}'


def test_a_foreign_exception_is_permanent():
    mapped = map_ccxt_error(ValueError("odd"))
    assert type(mapped) is PermanentExchangeError
    assert str(mapped) == "ValueError: odd"


@pytest.mark.parametrize("code", ["170141", "12141", "30001"])
@pytest.mark.parametrize("ccxt_type", [ccxt.InvalidOrder, ccxt.BadRequest, ccxt.ExchangeError])
def test_bybit_duplicate_order_link_id_codes(code, ccxt_type):
    exc = ccxt_type(f'bybit {{"retCode":{code},"retMsg":"Duplicate clientOrderId.","result":{{}}}}')

    mapped = map_bybit_error(exc)

    assert type(mapped) is DuplicateClientOrderId
    assert mapped.retryable is False
    assert code in str(mapped)


def test_a_duplicate_code_on_a_network_error_is_not_a_duplicate():
    # only an answer of the exchange can say the order exists; a timeout's text proves nothing
    mapped = map_bybit_error(ccxt.RequestTimeout("bybit POST /v5/order/create orderLinkId=sa-170141 timed out"))
    assert type(mapped) is RequestTimedOut


def test_a_duplicate_code_inside_another_number_is_not_a_duplicate():
    body = '{"retCode":110007,"retMsg":"ab not enough for new order","result":{},"time":1795482300012}'
    mapped = map_bybit_error(ccxt.InsufficientFunds(f"bybit {body}"))
    assert type(mapped) is InsufficientFunds


@pytest.fixture
def registered(monkeypatch):
    """A private registry of secrets for the test (the module keeps one for the whole process)."""
    monkeypatch.setattr(secrets, "_registered_secrets", set())
    return secrets


@pytest.mark.parametrize(("ccxt_type", "ours", "retryable"), MAPPING, ids=[m[0].__name__ for m in MAPPING])
def test_mapped_message_never_contains_a_registered_secret(registered, ccxt_type, ours, retryable):
    api_key, api_secret = "Kx7Q2mZp9LwV3nB8", "s3cr3t-T0k3n-0f-th3-4cc0unt"
    registered.register_secret(api_key)
    registered.register_secret(api_secret)
    exc = ccxt_type(f"bybit GET /v5/account/info?api_key={api_key}&sign={api_secret}x 10003 API key is invalid")

    mapped = map_ccxt_error(exc)

    assert type(mapped) is ours
    assert api_key not in str(mapped)
    assert api_secret not in str(mapped)
    assert str(mapped).endswith(f"api_key={secrets.MASK}&sign={secrets.MASK} 10003 API key is invalid")


def test_configured_secrets_are_masked_too(registered, settings):
    settings.STATARB_SECRETS_KEY = "fernet-key-0123456789abcdef"
    mapped = map_ccxt_error(ccxt.ExchangeError("echo fernet-key-0123456789abcdef"))
    assert str(mapped) == f"ExchangeError: echo {secrets.MASK}"


# ---------------------------------------------------------------------------------------------------- retry


class Flaky:
    """Raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors: Exception, result: str = "done"):
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def no_jitter(monkeypatch):
    monkeypatch.setattr(retry_module.random, "random", lambda: 0.5)  # jitter factor 0.75 + 0.5 / 2 = 1


def test_temporary_errors_are_retried_with_growing_delays():
    delays: list[float] = []
    operation = Flaky(TemporaryExchangeError("502"), RateLimited("10006"), RequestTimedOut("timeout"))

    assert call_with_retry(operation, description="fetch candles", sleep=delays.append) == "done"

    assert operation.calls == 4
    assert len(delays) == 3
    for delay, nominal in zip(delays, (0.5, 1.0, 2.0), strict=True):
        assert nominal * 0.75 <= delay <= nominal * 1.25
    assert delays[0] < delays[1] < delays[2]


def test_delays_double_up_to_the_cap(no_jitter):
    delays: list[float] = []
    operation = Flaky(*[TemporaryExchangeError("down")] * 5)

    call_with_retry(operation, description="x", attempts=6, base_delay_s=1.0, max_delay_s=3.0, sleep=delays.append)

    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_retries_stop_at_attempts_and_the_last_error_is_raised(no_jitter):
    delays: list[float] = []
    errors = [RateLimited(f"try {n}") for n in range(1, 10)]
    operation = Flaky(*errors)

    with pytest.raises(RateLimited) as info:
        call_with_retry(operation, description="x", attempts=4, sleep=delays.append)

    assert info.value is errors[3]
    assert operation.calls == 4
    assert delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "error",
    [PermanentExchangeError("no"), InvalidOrder("qty"), InsufficientFunds("funds"), AuthenticationFailed("key"),
     DuplicateClientOrderId("dup"), OrderNotFound("gone"), NotSupported("nope")],
    ids=lambda e: type(e).__name__,
)
def test_permanent_errors_are_never_retried(error):
    delays: list[float] = []
    operation = Flaky(error)

    with pytest.raises(type(error)) as info:
        call_with_retry(operation, description="x", sleep=delays.append)

    assert info.value is error
    assert operation.calls == 1
    assert delays == []


def test_errors_that_are_not_exchange_errors_pass_through_at_once():
    delays: list[float] = []
    operation = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        call_with_retry(operation, description="x", sleep=delays.append)
    assert (operation.calls, delays) == (1, [])


def test_one_attempt_means_no_retry():
    delays: list[float] = []
    operation = Flaky(TemporaryExchangeError("down"))
    with pytest.raises(TemporaryExchangeError):
        call_with_retry(operation, description="x", attempts=1, sleep=delays.append)
    assert (operation.calls, delays) == (1, [])


def test_each_retry_is_logged(no_jitter, caplog):
    caplog.set_level(logging.WARNING, logger="exchanges.retry")

    call_with_retry(Flaky(RateLimited("10006 Too many visits!")), description="load instruments",
                    sleep=lambda _: None)  # fmt: skip

    assert caplog.messages == ["load instruments failed (RateLimited: 10006 Too many visits!); retry 1/4 in 0.5s"]


def test_retryable_flags():
    assert all(cls.retryable for cls in (TemporaryExchangeError, RateLimited, RequestTimedOut))
    assert not any(
        cls.retryable
        for cls in (ExchangeError, PermanentExchangeError, AuthenticationFailed, InvalidOrder, InsufficientFunds,
                    DuplicateClientOrderId, OrderNotFound, NotSupported)
    )  # fmt: skip


class _Venue:
    """Answers the given place_order outcomes in turn (an exception is raised, anything else returned)."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def place_order(self, **kwargs):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _place(venue):
    return RetryingExchange(venue, sleep=lambda s: None).place_order(symbol="Y/USDT:USDT", side="buy", qty=1,
                                                                     client_order_id="sa1-1-a-yo1")


def test_a_refusal_of_a_retry_after_an_unknown_attempt_is_unknown():
    # The first attempt may have executed (and taken the margin the retry is refused for).
    venue = _Venue(RequestTimedOut("no answer"), InsufficientFunds("110007 ab not enough"))
    with pytest.raises(OrderOutcomeUnknown, match="InsufficientFunds on a retry of sa1-1-a-yo1"):
        _place(venue)
    assert venue.calls == 2


def test_a_refusal_at_the_first_attempt_is_a_refusal():
    with pytest.raises(InsufficientFunds):
        _place(_Venue(InsufficientFunds("110007 ab not enough")))


def test_a_refusal_after_refused_temporary_attempts_stays_a_refusal():
    # Rate limits prove nothing was applied: the refusal that follows is the order's answer.
    venue = _Venue(RateLimited("10006"), InsufficientFunds("110007 ab not enough"))
    with pytest.raises(InsufficientFunds):
        _place(venue)
