"""Secrets can't be pointed elsewhere, logins are rate limited, the docs work offline, pages are bounded, tokens are
made, shown once and revoked, and keys rotate."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from io import StringIO

import pytest
from axes.models import AccessAttempt
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.contrib.staticfiles import finders
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from core.models import AuditEntry
from core.secrets import decrypt_secret
from exchanges.errors import NotSupported
from exchanges.factory import trading_exchange
from execution.models import ExchangeAccount, PairTrade
from execution.selectors import CredentialsMissing, account_credentials
from execution.services.accounts import account_store_credentials
from tests.factories import ExchangeAccountFactory, PairTradeFactory

pytestmark = pytest.mark.django_db


# --- where credentials come from and where they may go ------------------------------------------------------------

@pytest.mark.parametrize("name", ["STATARB_SECRETS_KEY", "SECRET_KEY", "TELEGRAM_BOT_TOKEN", "DATABASE_URL",
                                  "statarb_cred_lower", "XSTATARB_CRED_KEY"])
def test_a_credential_variable_outside_the_prefix_is_refused(name, monkeypatch):
    account = ExchangeAccountFactory.build(api_key_env=name, api_secret_env="STATARB_CRED_SECRET")
    with pytest.raises(ValidationError) as excinfo:
        account.full_clean(exclude=["level"])
    assert "api_key_env" in excinfo.value.message_dict
    assert "STATARB_CRED_" in excinfo.value.message_dict["api_key_env"][0]
    # A row written around clean() (by hand, by a script) is refused again where the key is read.
    saved = ExchangeAccountFactory(api_key_env="STATARB_CRED_KEY", api_secret_env="STATARB_CRED_SECRET")
    ExchangeAccount.objects.filter(pk=saved.pk).update(api_key_env=name)
    monkeypatch.setenv(name, "a-value-that-must-not-travel")
    monkeypatch.setenv("STATARB_CRED_SECRET", "a-secret-value")
    with pytest.raises(CredentialsMissing, match="must start with 'STATARB_CRED_'"):
        account_credentials(account=ExchangeAccount.objects.get(pk=saved.pk))


def test_the_prefix_is_a_setting(settings):
    settings.STATARB_CREDENTIAL_ENV_PREFIX = "BYBIT_"
    ExchangeAccountFactory.build(api_key_env="BYBIT_KEY", api_secret_env="BYBIT_SECRET").full_clean(exclude=["level"])
    with pytest.raises(ValidationError):
        ExchangeAccountFactory.build(api_key_env="STATARB_CRED_KEY", api_secret_env="BYBIT_S").full_clean(
            exclude=["level"])


@pytest.mark.parametrize("url", ["https://evil.example.com", "http://api.bybit.com", "https://api.bybit.com.evil.io",
                                 "https://user:pw@api.bybit.com", "ftp://api.bybit.com", "https://10.0.0.5:8443"])
def test_a_base_url_off_the_allow_list_is_refused(url):
    account = ExchangeAccountFactory.build(base_url_override=url)
    with pytest.raises(ValidationError) as excinfo:
        account.full_clean(exclude=["level"])
    assert "base_url_override" in excinfo.value.message_dict
    with pytest.raises(NotSupported):
        trading_exchange("bybit", api_key="k" * 20, api_secret="s" * 20, demo=True, base_url=url)


@pytest.mark.parametrize("url", ["https://api.bybit.com", "https://api-demo.bybit.com", "https://api.bytick.com"])
def test_bybit_domains_are_allowed(url):
    ExchangeAccountFactory.build(base_url_override=url).full_clean(exclude=["level"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1234", "http://[::1]:9000"])
def test_loopback_is_allowed_only_where_switched_on(url, settings):
    ExchangeAccountFactory.build(base_url_override=url).full_clean(exclude=["level"])  # tests: on
    settings.STATARB_ALLOW_LOOPBACK_BASE_URLS = False  # production
    with pytest.raises(ValidationError, match="loopback"):
        ExchangeAccountFactory.build(base_url_override=url).full_clean(exclude=["level"])
    with pytest.raises(NotSupported, match="loopback"):
        trading_exchange("bybit", api_key="k" * 20, api_secret="s" * 20, demo=True, base_url=url)


def test_the_attack_of_the_issue_is_refused_in_the_admin(client, django_user_model):
    """Naming the master key as the API key and pointing the account at a local proxy: both fields refused."""
    root = django_user_model.objects.create_superuser("root", password="a-long-test-password")
    client.force_login(root)
    account = ExchangeAccountFactory()
    page = client.get(reverse("admin:execution_exchangeaccount_change", args=[account.pk]))
    data = {k: v for k, v in page.context["adminform"].form.initial.items() if v is not None}
    data.update(api_key_env="STATARB_SECRETS_KEY", api_secret_env="SECRET_KEY",
                base_url_override="https://proxy.attacker.example")
    response = client.post(reverse("admin:execution_exchangeaccount_change", args=[account.pk]), data)
    errors = response.context["adminform"].form.errors
    assert {"api_key_env", "api_secret_env", "base_url_override"} <= set(errors)
    account.refresh_from_db()
    assert account.api_key_env == "" and account.base_url_override == ""


# --- login rate limiting -----------------------------------------------------------------------------------------

@pytest.fixture
def victim(django_user_model):
    user = django_user_model.objects.create_user("victim", password="the-right-password-42", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    return user


@pytest.mark.parametrize("login_url", ["/admin/login/", "/accounts/login/"])
def test_fifty_wrong_passwords_then_the_right_one_do_not_log_in(client, victim, login_url, caplog):
    caplog.set_level(logging.WARNING, logger="axes")
    for attempt in range(50):
        # From many addresses: the user name itself is locked.
        client.post(login_url, {"username": "victim", "password": f"guess-{attempt}"},
                    REMOTE_ADDR=f"10.0.{attempt // 250}.{attempt % 250 + 1}")
    response = client.post(login_url, {"username": "victim", "password": "the-right-password-42"},
                           REMOTE_ADDR="10.9.9.9")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("dashboard")).status_code == 302  # still anonymous
    lockouts = [r.getMessage() for r in caplog.records if "locking out" in r.getMessage().lower()]
    assert lockouts and "victim" in lockouts[0]
    assert not any("the-right-password-42" in r.getMessage() or "guess-1" in r.getMessage() for r in caplog.records)


def test_one_address_guessing_many_users_is_locked(client, victim):
    for attempt in range(6):
        client.post("/admin/login/", {"username": f"user{attempt}", "password": "x"}, REMOTE_ADDR="10.1.1.1")
    response = client.post("/admin/login/", {"username": "victim", "password": "the-right-password-42"},
                           REMOTE_ADDR="10.1.1.1")
    assert response.status_code == 429 and "_auth_user_id" not in client.session


def test_behind_the_proxy_a_guesser_locks_its_own_address_not_everyone_elses(client, victim, settings):
    # Behind the reverse proxy every request comes from the proxy's address: a stranger's wrong passwords locked
    # that address, so nobody could log in (the dashboard's and the admin's kill switch) for AXES_COOLOFF_HOURS.
    settings.BEHIND_TLS_PROXY = True
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    for attempt in range(6):  # spoofed entries in front of what the proxy appended don't move the guesser
        client.post("/accounts/login/", {"username": f"nobody{attempt}", "password": "x"}, **proxy,
                    HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}, 203.0.113.9")
    operator = type(client)()
    response = operator.post("/accounts/login/", {"username": "victim", "password": "the-right-password-42"},
                             **proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 302 and operator.session.get("_auth_user_id") == str(victim.pk)
    response = type(client)().post("/accounts/login/", {"username": "victim", "password": "the-right-password-42"},
                                   **proxy, HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.9")
    assert response.status_code == 429  # the guesser's own address stays locked
    assert AccessAttempt.objects.filter(ip_address="203.0.113.9").exists()
    assert not AccessAttempt.objects.filter(ip_address="127.0.0.1").exists()


@pytest.mark.parametrize("forwarded", ["", "not-an-address", "10.0.0.1, 300.1.2.3"])
def test_behind_the_proxy_a_missing_or_malformed_forwarded_address_counts_as_the_proxys(client, victim, settings,
                                                                                       forwarded):
    settings.BEHIND_TLS_PROXY = True
    for attempt in range(6):
        client.post("/accounts/login/", {"username": f"nobody{attempt}", "password": "x"}, REMOTE_ADDR="127.0.0.5",
                    HTTP_X_FORWARDED_FOR=forwarded)
    assert AccessAttempt.objects.filter(ip_address="127.0.0.5").exists()


def test_without_the_proxy_a_forwarded_header_is_the_clients_word_and_ignored(client, victim):
    for attempt in range(6):
        client.post("/accounts/login/", {"username": f"nobody{attempt}", "password": "x"}, REMOTE_ADDR="10.3.3.3",
                    HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}")
    response = client.post("/accounts/login/", {"username": "victim", "password": "the-right-password-42"},
                           REMOTE_ADDR="10.3.3.3", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert response.status_code == 429 and "_auth_user_id" not in client.session


def test_the_apis_throttle_counts_an_anonymous_client_by_its_address_not_by_a_header_it_writes(rf):
    # DRF's default counted the whole X-Forwarded-For: a new value per request was a new client, never throttled.
    request = rf.get("/api/v1/", REMOTE_ADDR="10.4.4.4", HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert AnonRateThrottle().get_ident(request) == "10.4.4.4"


def test_the_lock_out_is_listed_in_the_admin(client, victim, django_user_model):
    for attempt in range(6):
        client.post("/admin/login/", {"username": "victim", "password": f"wrong-{attempt}"}, REMOTE_ADDR="10.2.2.2")
    admin_client = type(client)()
    admin_client.force_login(django_user_model.objects.create_superuser("root", password="a-long-test-password"))
    page = admin_client.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and b"victim" in page.content and b"10.2.2.2" in page.content


def test_a_right_password_under_the_limit_logs_in(client, victim):
    for attempt in range(3):
        client.post("/accounts/login/", {"username": "victim", "password": f"wrong-{attempt}"})
    response = client.post("/accounts/login/", {"username": "victim", "password": "the-right-password-42"})
    assert response.status_code == 302 and client.session.get("_auth_user_id") == str(victim.pk)


# --- web hardening -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_api_docs_load_only_our_own_files(client, victim, url):
    client.force_login(victim)
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by this site"
        if asset.startswith("/static/"):
            assert finders.find(asset.removeprefix("/static/")), f"{asset} is missing from the static files"
        else:
            assert client.get(asset).status_code == 200, asset
    assert "<script>" not in html.replace(" ", "")  # no inline script: the CSP forbids it
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "http" not in policy


def test_every_page_carries_the_content_security_policy(client, victim):
    client.force_login(victim)
    for url in ("/", "/admin/", "/accounts/login/", "/api/v1/"):
        assert "default-src 'self'" in client.get(url)["Content-Security-Policy"], url


def test_a_client_cannot_ask_for_more_than_the_maximum_page(api_client):
    account = ExchangeAccountFactory()
    trade = PairTradeFactory(account=account)
    PairTrade.objects.bulk_create([PairTrade(account=account, pair=trade.pair, side=trade.side, state=trade.state,
                                             hedge_ratio=1.0, y_qty=Decimal(1), x_qty=Decimal(1))
                                   for _ in range(1010)])
    body = api_client.get("/api/v1/trades/", {"limit": 1_000_000}).json()
    assert body["count"] == 1011 and len(body["results"]) == 1000 and body["next"]
    assert len(api_client.get("/api/v1/trades/").json()["results"]) == 100


def test_every_list_endpoint_is_paginated_and_bounded():
    from django.urls import get_resolver
    from rest_framework.generics import ListAPIView

    from core.api import BoundedPagination

    lists = []
    for pattern in get_resolver().url_patterns:
        for sub in getattr(pattern, "url_patterns", []):
            view = getattr(sub.callback, "view_class", None)
            if view is not None and issubclass(view, ListAPIView):
                lists.append(view)
                assert issubclass(view().pagination_class, BoundedPagination), view
    assert len(lists) >= 7
    assert BoundedPagination.max_limit == 1000


# --- API tokens --------------------------------------------------------------------------------------------------

@pytest.fixture
def reporter(django_user_model):
    user = django_user_model.objects.create_user("powerbi", password="unused-password-123")
    user.groups.add(Group.objects.get(name="reporting"))
    return user


def test_create_api_token_prints_a_working_token_once(reporter):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "powerbi", "--days", "30", stdout=out, stderr=err)
    token = out.getvalue().strip().splitlines()[-1]
    stored = AuthToken.objects.get(user=reporter)
    assert token not in str(list(AuthToken.objects.values())) and stored.digest != token  # only a hash is kept
    assert 29 <= (stored.expiry - stored.created).days <= 30
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/trades/").status_code == 200
    assert api.post(f"/api/v1/trades/{PairTradeFactory().pk}/close/").status_code == 403  # reporting reads only
    entry = AuditEntry.objects.get(action="create_api_token")
    assert entry.channel == "command" and token not in entry.summary and token not in str(entry.details)

    call_command("revoke_api_tokens", "powerbi", stdout=StringIO())
    assert api.get("/api/v1/trades/").status_code == 401
    assert AuditEntry.objects.filter(action="revoke_api_tokens", channel="command").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["nobody"], "no user named 'nobody'"),
    (["powerbi", "--days", "0"], "--days must be from 1 to 3650"),
    (["powerbi", "--days", "99999"], "--days must be from 1 to 3650"),
])
def test_create_api_token_refuses_bad_input(reporter, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=StringIO(), stderr=StringIO())
    assert not AuthToken.objects.exists()


def test_a_user_who_may_not_read_the_api_gets_no_token(django_user_model):
    django_user_model.objects.create_user("nobody-special", password="unused-password-123")
    with pytest.raises(CommandError, match=r"lacks the permission monitoring\.read_api"):
        call_command("create_api_token", "nobody-special", stdout=StringIO(), stderr=StringIO())


def test_an_expired_token_is_refused(reporter):
    from datetime import timedelta

    _, token = AuthToken.objects.create(user=reporter, expiry=timedelta(seconds=-1))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/trades/").status_code == 401


def test_tokens_are_made_in_the_admin_shown_once_and_revoked(client, reporter, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="a-long-test-password")
    client.force_login(root)
    made = client.post(reverse("admin:knox_authtoken_add"), {"user": reporter.pk, "days": 7})
    # The message waits for the next page in the session, not in a cookie (signed, not encrypted).
    assert made.status_code == 302 and "messages" not in made.cookies
    response = client.get(made["Location"])
    [message] = [str(m) for m in response.context["messages"]]  # only the token's: not the stock one with its hash
    assert "API token" in message
    token = message.rsplit(" ", 1)[-1]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/pairs/").status_code == 200
    stored = AuthToken.objects.get(user=reporter)
    page = client.get(reverse("admin:knox_authtoken_change", args=[stored.pk]))
    assert token not in page.content.decode() and token not in client.get(
        reverse("admin:knox_authtoken_changelist")).content.decode()
    assert AuditEntry.objects.filter(action="create_api_token", channel="admin", actor=root).exists()

    client.post(reverse("admin:auth_user_changelist"),
                {"action": "revoke_api_tokens", "_selected_action": [reporter.pk]})
    assert not AuthToken.objects.filter(user=reporter).exists()
    assert api.get("/api/v1/pairs/").status_code == 401


# --- key rotation --------------------------------------------------------------------------------------------------

def test_rotate_secrets_re_encrypts_with_the_first_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.STATARB_SECRETS_KEY = old
    account = ExchangeAccountFactory()
    account_store_credentials(account=account, api_key="rotating-key-123456", api_secret="rotating-secret-123456")
    settings.STATARB_SECRETS_KEY = f"{new},{old}"
    assert account_credentials(account=account).api_key == "rotating-key-123456"  # the old key still reads

    call_command("rotate_secrets", stdout=StringIO())

    settings.STATARB_SECRETS_KEY = new  # the old key dropped
    account.refresh_from_db()
    assert decrypt_secret(account.api_key_encrypted) == "rotating-key-123456"
    assert account_credentials(account=account).api_secret == "rotating-secret-123456"
    assert AuditEntry.objects.filter(action="rotate_secrets").exists()


@pytest.mark.parametrize("key", ["", "garbage", f"{Fernet.generate_key().decode()},garbage"],
                         ids=["unset", "malformed", "second-malformed"])
def test_rotate_secrets_with_no_usable_key_is_an_error_even_with_nothing_stored(settings, key):
    # With no credential stored, a malformed or missing key was reported as "re-encrypted ... with the first key".
    settings.STATARB_SECRETS_KEY = key

    with pytest.raises(CommandError, match=r"^STATARB_SECRETS_KEY"):
        call_command("rotate_secrets", stdout=StringIO())
    assert not AuditEntry.objects.filter(action="rotate_secrets").exists()


def test_rotate_secrets_without_the_old_key_changes_nothing(settings):
    settings.STATARB_SECRETS_KEY = Fernet.generate_key().decode()
    account = ExchangeAccountFactory()
    account_store_credentials(account=account, api_key="rotating-key-123456", api_secret="rotating-secret-123456")
    before = ExchangeAccount.objects.get(pk=account.pk).api_key_encrypted
    settings.STATARB_SECRETS_KEY = Fernet.generate_key().decode()
    with pytest.raises(CommandError, match="could not be decrypted"):
        call_command("rotate_secrets", stdout=StringIO())
    assert ExchangeAccount.objects.get(pk=account.pk).api_key_encrypted == before


@pytest.mark.parametrize("header", [b"Token \xe9\xe9\xe9", b"Token \xff" + b"a" * 80, b"token \xc3"])
def test_a_token_header_that_is_not_utf8_is_refused_like_any_wrong_token(header):
    """HTTP headers travel as Latin-1: a token pasted with an accent was a 500 (knox decodes it as UTF-8)."""
    api = APIClient(raise_request_exception=False)
    answer = api.get("/api/v1/trades/", HTTP_AUTHORIZATION=header.decode("latin-1"))
    assert answer.status_code == 401 and answer.json() == {"detail": "Invalid token."}
    assert answer["WWW-Authenticate"] == "Token"


def test_the_schema_documents_the_token_scheme(reporter):
    api = APIClient()
    api.force_authenticate(reporter)
    schemes = api.get("/api/v1/schema/?format=json").json()["components"]["securitySchemes"]
    assert schemes["knoxApiToken"] == {"type": "apiKey", "in": "header", "name": "Authorization",
                                       "description": 'Token-based authentication with required prefix "Token"'}
