"""The account admin: credentials are write-only, stored encrypted, never rendered."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from core.secrets import decrypt_secret
from execution.models import ExchangeAccount
from execution.services.accounts import account_store_credentials
from pairs.models import Level
from tests.factories import ExchangeAccountFactory

pytestmark = pytest.mark.django_db

PLAIN_KEY = "admin-plain-key-Xy7Wq3Er5"
PLAIN_SECRET = "admin-plain-secret-Lk2Jh8Gf4Ds"


def _account_form(**overrides) -> dict:
    data = {
        "name": "bybit-paper-1",
        "exchange": "bybit",
        "mode": ExchangeAccount.Mode.PAPER,
        "level": Level.objects.get(number=1).pk,
        "capital": "10000",
        "per_trade_budget": "500",
        "max_concurrent_trades": "5",
        "leverage": "1",
        "position_mode": ExchangeAccount.PositionMode.ONE_WAY,
        "base_url_override": "",
        "api_key_env": "",
        "api_secret_env": "",
        "enabled": "on",
        "new_api_key": "",
        "new_api_secret": "",
        "_save": "Save",
    }
    data.update(overrides)
    return data


@pytest.fixture
def stored_account(secrets_key):
    account = ExchangeAccountFactory(name="stored-bot")
    account_store_credentials(account=account, api_key=PLAIN_KEY, api_secret=PLAIN_SECRET)
    account.refresh_from_db()
    return account


def test_add_page_renders_no_credential(staff_client, stored_account):
    response = staff_client.get(reverse("admin:execution_exchangeaccount_add"))
    assert response.status_code == 200
    html = response.text
    assert 'name="new_api_key"' in html and 'type="password"' in html
    for value in (PLAIN_KEY, PLAIN_SECRET, stored_account.api_key_encrypted, stored_account.api_secret_encrypted):
        assert value not in html


def test_change_page_renders_no_credential(staff_client, stored_account):
    response = staff_client.get(reverse("admin:execution_exchangeaccount_change", args=[stored_account.pk]))
    assert response.status_code == 200
    html = response.text
    assert "stored encrypted" in html  # the read-only source, not the values
    assert "api_key_encrypted" not in html and "api_secret_encrypted" not in html
    for value in (PLAIN_KEY, PLAIN_SECRET, stored_account.api_key_encrypted, stored_account.api_secret_encrypted):
        assert value not in html


def test_changelist_renders_no_credential(staff_client, stored_account):
    response = staff_client.get(reverse("admin:execution_exchangeaccount_changelist"))
    assert response.status_code == 200
    assert "stored-bot" in response.text
    for value in (PLAIN_KEY, PLAIN_SECRET, stored_account.api_key_encrypted, stored_account.api_secret_encrypted):
        assert value not in response.text


def test_adding_an_account_with_new_credentials_stores_them_encrypted(staff_client, secrets_key):
    response = staff_client.post(
        reverse("admin:execution_exchangeaccount_add"),
        _account_form(new_api_key=PLAIN_KEY, new_api_secret=PLAIN_SECRET),
    )

    assert response.status_code == 302
    account = ExchangeAccount.objects.get(name="bybit-paper-1")
    assert account.api_key_encrypted and account.api_secret_encrypted
    assert PLAIN_KEY not in account.api_key_encrypted
    assert PLAIN_SECRET not in account.api_secret_encrypted
    assert decrypt_secret(account.api_key_encrypted) == PLAIN_KEY
    assert decrypt_secret(account.api_secret_encrypted) == PLAIN_SECRET


def test_changing_credentials_replaces_them_and_blank_keeps_them(staff_client, stored_account):
    url = reverse("admin:execution_exchangeaccount_change", args=[stored_account.pk])
    old_ciphertext = stored_account.api_key_encrypted

    response = staff_client.post(url, _account_form(name="stored-bot", capital="20000"))
    assert response.status_code == 302
    stored_account.refresh_from_db()
    assert stored_account.capital == 20000
    assert stored_account.api_key_encrypted == old_ciphertext

    response = staff_client.post(
        url, _account_form(name="stored-bot", new_api_key="rotated-key-Nn1", new_api_secret="rotated-secret-Mm2")
    )
    assert response.status_code == 302
    stored_account.refresh_from_db()
    assert stored_account.api_key_encrypted != old_ciphertext
    assert decrypt_secret(stored_account.api_key_encrypted) == "rotated-key-Nn1"
    assert decrypt_secret(stored_account.api_secret_encrypted) == "rotated-secret-Mm2"


@pytest.mark.parametrize(
    "given", [{"new_api_key": PLAIN_KEY}, {"new_api_secret": PLAIN_SECRET}], ids=["key-only", "secret-only"]
)
def test_only_one_of_key_and_secret_is_a_form_error(staff_client, secrets_key, given):
    response = staff_client.post(reverse("admin:execution_exchangeaccount_add"), _account_form(**given))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["__all__"] == ["Give both the new API key and the new API secret, or neither."]
    assert not ExchangeAccount.objects.filter(name="bybit-paper-1").exists()
    # The password widgets don't echo what was typed back into the page.
    assert PLAIN_KEY not in response.text and PLAIN_SECRET not in response.text


@pytest.mark.parametrize("key", ["not-a-fernet-key", "Zm9v,"])
def test_a_malformed_secrets_key_is_a_form_error_not_an_error_page(staff_client, settings, key):
    # The form only asked whether STATARB_SECRETS_KEY was set; encrypting in save_model raised SecretsKeyMissing.
    settings.STATARB_SECRETS_KEY = key

    response = staff_client.post(reverse("admin:execution_exchangeaccount_add"),
                                 _account_form(new_api_key=PLAIN_KEY, new_api_secret=PLAIN_SECRET))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["__all__"]
    assert errors == ["STATARB_SECRETS_KEY: key 1 of 1 is not a valid Fernet key (32 url-safe base64 bytes, as "
                      "Fernet.generate_key() makes; several keys are separated by commas)."]
    assert not ExchangeAccount.objects.filter(name="bybit-paper-1").exists()
    assert PLAIN_KEY not in response.text and PLAIN_SECRET not in response.text


def test_admin_action_refuses_to_close_a_trade_of_a_disabled_account(staff_client):
    from core.models import AuditEntry
    from execution.models import PairTrade
    from tests.factories import ExchangeAccountFactory, PairTradeFactory

    trade = PairTradeFactory(state=PairTrade.State.OPEN, account=ExchangeAccountFactory(name="replay", enabled=False))
    response = staff_client.post("/admin/execution/pairtrade/",
                                 {"action": "close_by_hand", "_selected_action": [trade.pk]}, follow=True)
    assert "Close requested for" not in response.text  # only the refusal, no "0 requested" beside it
    assert "Refused: account replay is disabled" in response.text
    trade.refresh_from_db()
    assert trade.close_requested_at is None
    assert AuditEntry.objects.filter(action="refused", target_id=str(trade.pk)).exists()


def test_admin_action_closes_trades_by_hand(staff_client):
    from execution.models import PairTrade
    from tests.factories import PairTradeFactory

    open_trade = PairTradeFactory(state=PairTrade.State.OPEN)
    closed_trade = PairTradeFactory(state=PairTrade.State.CLOSED)
    response = staff_client.post(
        "/admin/execution/pairtrade/",
        {"action": "close_by_hand", "_selected_action": [open_trade.pk, closed_trade.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Close requested for 1 trade(s); 1 had already finished." in response.content.decode()
    open_trade.refresh_from_db()
    closed_trade.refresh_from_db()
    assert open_trade.close_requested_at is not None and closed_trade.close_requested_at is None


def test_lowering_an_accounts_capital_in_the_admin_is_no_loss_for_the_guard(staff_client):
    """Equity is capital + PnL: a capital of 10,000 lowered to 5,000 mid-day moves equity by -5,000 without any
    trade. The guard's baselines move with it: no daily loss, no drawdown, no unexplained balance change."""
    from django.utils import timezone

    from core.clock import ManualClock
    from monitoring.guard.cycle import guard_run
    from pairs.market import StoredMarket
    from risk.models import DailyPnlSnapshot
    from tests.factories import RiskLimitFactory

    account = ExchangeAccountFactory(name="capital-cut", capital=Decimal(10000), mode=ExchangeAccount.Mode.PAPER)
    RiskLimitFactory(account=account, daily_loss_limit=Decimal(100), max_drawdown_pct=0.05)

    def cycle():
        now = timezone.now()
        report = guard_run(now=now, market=StoredMarket(timeframe="1h", clock=ManualClock(now)),
                           accounts=[account], live=False)
        return [b.check for b in report.breaches if b.check != "stale_data"]  # no candles stored in this test

    assert cycle() == []
    url = reverse("admin:execution_exchangeaccount_change", args=[account.pk])
    form = _account_form(name="capital-cut", capital="5000", level=account.level_id)
    assert staff_client.post(url, form).status_code == 302
    account.refresh_from_db()
    assert account.capital == 5000
    assert cycle() == []  # without the baselines moved: daily_loss and drawdown
    today = DailyPnlSnapshot.objects.get(account=account)
    assert (today.starting_equity, today.ending_equity, today.peak_equity) == (5000, 5000, 5000)


@pytest.mark.parametrize(("before", "after"), [("real", "paper"), ("demo", "real"), ("paper", "demo")])
def test_an_account_holding_open_trades_keeps_its_mode_until_they_are_closed(staff_client, before, after):
    """The mode says where the open trades' legs are: switched under them, the bot looked for the legs on the new
    venue and left the positions on the old one unmanaged. Refused, naming the field; once flat it switches."""
    from execution.models import PairTrade
    from tests.factories import PairTradeFactory

    level = Level.objects.get(number=3)  # a level that trades real capital: the only refusal is the open trade
    env = {"api_key_env": "STATARB_CRED_K", "api_secret_env": "STATARB_CRED_S"}
    account = ExchangeAccountFactory(name="switched", mode=before, level=level, **env)
    trade = PairTradeFactory(account=account, state=PairTrade.State.OPEN)
    url = reverse("admin:execution_exchangeaccount_change", args=[account.pk])
    form = _account_form(name="switched", mode=after, level=level.pk, **env)

    response = staff_client.post(url, form)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["mode"]
    assert "holds 1 open trade(s)" in errors["mode"][0] and "close them first" in errors["mode"][0]
    account.refresh_from_db()
    assert account.mode == before

    trade.state = PairTrade.State.CLOSED
    trade.save(update_fields=["state"])
    assert staff_client.post(url, form).status_code == 302
    account.refresh_from_db()
    assert account.mode == after


def test_an_account_edit_is_audited_with_its_values_before_and_after_and_no_credential(staff_client, stored_account):
    """The audit named the fields only ('mode, capital'): who switched an account to real, or doubled its capital,
    from what, was not on record. The new credentials are named, never shown."""
    from core.models import AuditEntry

    level = Level.objects.get(number=3)
    url = reverse("admin:execution_exchangeaccount_change", args=[stored_account.pk])
    response = staff_client.post(url, _account_form(name="stored-bot", mode="real", capital="20000.50", level=level.pk,
                                                    new_api_key=PLAIN_KEY + "2", new_api_secret=PLAIN_SECRET + "2"))

    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="change_exchangeaccount")
    assert entry.actor == staff_client.user
    assert entry.details["fields"] == ["capital", "level", "mode", "new_api_key", "new_api_secret"]
    before, after = entry.details["before"], entry.details["after"]
    assert {name: (before[name], after[name]) for name in ("mode", "capital", "level")} == {
        "mode": ("paper", "real"), "capital": ("10000", "20000.5"), "level": ("L1 paper", "L3 full live")}
    for text in ("mode 'paper' -> 'real'", "capital '10000' -> '20000.5'", "level 'L1 paper' -> 'L3 full live'",
                 "new_api_key"):
        assert text in entry.summary
    for entry in AuditEntry.objects.all():
        for secret in (PLAIN_KEY, PLAIN_SECRET):
            assert secret not in entry.summary and secret not in str(entry.details)


def test_two_people_editing_one_account_the_second_save_is_refused_not_saved_over_the_first(staff_client):
    """Both open the form; one cuts the capital, then the other raises the leverage: the second save wrote every
    field as its form showed it and put the capital back, silently (the audit even read 'capital 5000 -> 10000')."""
    import re

    account = ExchangeAccountFactory(name="shared", capital=Decimal(10000))
    url = reverse("admin:execution_exchangeaccount_change", args=[account.pk])

    def opened(**edits) -> dict:
        html = staff_client.get(url).text
        seen = re.search(r'name="seen_updated_at" value="([^"]*)"', html)
        return _account_form(name="shared", level=account.level_id,
                             seen_updated_at=seen.group(1) if seen else "") | edits

    first, second = opened(capital="5000"), opened(leverage="2")
    assert staff_client.post(url, first).status_code == 302

    response = staff_client.post(url, second)

    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert "was changed by someone else after this form was opened" in errors[0] and "nothing was saved" in errors[0]
    account.refresh_from_db()
    assert (account.capital, account.leverage) == (5000, 1)
    assert staff_client.post(url, opened(capital="5000", leverage="2")).status_code == 302  # opened again
    account.refresh_from_db()
    assert (account.capital, account.leverage) == (5000, 2)


@pytest.mark.parametrize("mode", ["paper", "demo", "real"])
def test_hedge_position_mode_is_refused_naming_the_field(staff_client, mode):
    """Offered in the form, done by nothing: a demo or real account in hedge mode failed every tick (the venue refuses
    to build its client), so its open trades went on with no exit and no stop; a paper one traded one-way."""
    level = Level.objects.get(number=3)
    env = {"api_key_env": "STATARB_CRED_K", "api_secret_env": "STATARB_CRED_S"}
    form = _account_form(name="hedged", mode=mode, level=level.pk, position_mode="hedge", **env)

    response = staff_client.post(reverse("admin:execution_exchangeaccount_add"), form)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["position_mode"] and "one-way position mode only" in errors["position_mode"][0]
    assert not ExchangeAccount.objects.filter(name="hedged").exists()
    assert staff_client.post(reverse("admin:execution_exchangeaccount_add"),
                             form | {"position_mode": "one_way"}).status_code == 302


@pytest.mark.parametrize("failing", ["after_the_save", "in_the_encryption"])
def test_the_debug_error_page_of_a_failed_credential_save_shows_no_credential(staff_client, secrets_key, settings,
                                                                              monkeypatch, failing):
    """With DEBUG on (make demo, .env.example) Django cleanses nothing: its page listed the posted new_api_key and
    new_api_secret, and the arguments of account_store_credentials, in full."""
    from django.test import Client

    import core.secrets
    import execution.admin

    def fails(*args, **kwargs):
        raise RuntimeError("a failure in the middle of the save")

    if failing == "after_the_save":
        monkeypatch.setattr(execution.admin, "guard_baselines_move_with_capital", fails)
    else:
        monkeypatch.setattr(core.secrets, "_fernet", lambda: type("Refusing", (), {"encrypt": fails})())
    settings.DEBUG = True
    account = ExchangeAccountFactory(name="failing")
    browser = Client(raise_request_exception=False)
    browser.force_login(staff_client.user)

    response = browser.post(reverse("admin:execution_exchangeaccount_change", args=[account.pk]),
                            _account_form(name="failing", level=account.level_id, capital="5000",
                                          new_api_key=PLAIN_KEY, new_api_secret=PLAIN_SECRET))

    assert response.status_code == 500 and "a failure in the middle of the save" in response.text
    assert PLAIN_KEY not in response.text and PLAIN_SECRET not in response.text
    assert "new_api_key" in response.text  # named, its value hidden
    account.refresh_from_db()
    assert not account.api_key_encrypted and account.capital == 10000  # nothing half-written


@pytest.mark.parametrize(("mode", "refused"), [("demo", True), ("real", True), ("paper", False)])
def test_a_demo_or_real_account_on_an_exchange_without_orders_is_refused_naming_it(staff_client, mode, refused):
    """'binance' (or 'Bybit') was saved, and the account's every tick then failed: its client is built for bybit
    only. A paper account simulates whatever exchange the universe is on."""
    level = Level.objects.get(number=3)
    env = {"api_key_env": "STATARB_CRED_K", "api_secret_env": "STATARB_CRED_S"}
    form = _account_form(name="elsewhere", mode=mode, level=level.pk, exchange="binance", **env)

    response = staff_client.post(reverse("admin:execution_exchangeaccount_add"), form)

    if not refused:
        assert response.status_code == 302
        return
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["exchange"] and "orders are implemented: bybit" in errors["exchange"][0]
    assert not ExchangeAccount.objects.filter(name="elsewhere").exists()
