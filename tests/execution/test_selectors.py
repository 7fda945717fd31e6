"""Account credentials: from named environment variables first, else from encrypted storage; never shown."""

from __future__ import annotations

import pytest

from execution.selectors import Credentials, CredentialsMissing, account_credentials, credentials_source
from execution.services.accounts import account_store_credentials
from tests.factories import ExchangeAccountFactory

pytestmark = pytest.mark.django_db

ENV_KEY = "env-api-key-7Hq2Lw9Xr"
ENV_SECRET = "env-api-secret-Zm4Pt8Nc1Vb"
STORED_KEY = "stored-api-key-Qe5Rt6Yu"
STORED_SECRET = "stored-api-secret-Io9Pa8Sd7"


@pytest.fixture
def env_account():
    return ExchangeAccountFactory(name="env-bot", api_key_env="STATARB_CRED_TEST_API_KEY",
                                  api_secret_env="STATARB_CRED_TEST_API_SECRET")


def test_credentials_from_environment_variables(env_account, monkeypatch):
    monkeypatch.setenv("STATARB_CRED_TEST_API_KEY", ENV_KEY)
    monkeypatch.setenv("STATARB_CRED_TEST_API_SECRET", ENV_SECRET)

    credentials = account_credentials(account=env_account)

    assert credentials == Credentials(ENV_KEY, ENV_SECRET)
    assert (credentials.api_key, credentials.api_secret) == (ENV_KEY, ENV_SECRET)


def test_environment_variables_win_over_stored_credentials(env_account, monkeypatch, secrets_key):
    account_store_credentials(account=env_account, api_key=STORED_KEY, api_secret=STORED_SECRET)
    monkeypatch.setenv("STATARB_CRED_TEST_API_KEY", ENV_KEY)
    monkeypatch.setenv("STATARB_CRED_TEST_API_SECRET", ENV_SECRET)

    assert account_credentials(account=env_account) == Credentials(ENV_KEY, ENV_SECRET)


@pytest.mark.parametrize("present", [None, "STATARB_CRED_TEST_API_KEY", "STATARB_CRED_TEST_API_SECRET"])
def test_missing_or_half_set_environment_variables(env_account, monkeypatch, present):
    monkeypatch.delenv("STATARB_CRED_TEST_API_KEY", raising=False)
    monkeypatch.delenv("STATARB_CRED_TEST_API_SECRET", raising=False)
    if present:
        monkeypatch.setenv(present, "some-credential-value")

    with pytest.raises(CredentialsMissing) as excinfo:
        account_credentials(account=env_account)

    message = str(excinfo.value)
    assert "env-bot" in message
    assert "STATARB_CRED_TEST_API_KEY" in message and "STATARB_CRED_TEST_API_SECRET" in message
    assert "some-credential-value" not in message


def test_credentials_from_encrypted_storage(secrets_key):
    account = ExchangeAccountFactory()
    account_store_credentials(account=account, api_key=STORED_KEY, api_secret=STORED_SECRET)

    account.refresh_from_db()
    assert account.api_key_encrypted and account.api_key_encrypted != STORED_KEY
    assert account.api_secret_encrypted and account.api_secret_encrypted != STORED_SECRET
    assert account_credentials(account=account) == Credentials(STORED_KEY, STORED_SECRET)


def test_no_credentials_at_all():
    account = ExchangeAccountFactory(name="bare-bot")
    with pytest.raises(CredentialsMissing, match="bare-bot"):
        account_credentials(account=account)


def test_half_stored_credentials_are_missing(secrets_key):
    account = ExchangeAccountFactory()
    account_store_credentials(account=account, api_key=STORED_KEY, api_secret=STORED_SECRET)
    account.api_secret_encrypted = ""
    account.save()

    with pytest.raises(CredentialsMissing):
        account_credentials(account=account)


def test_storing_needs_both_values(secrets_key):
    account = ExchangeAccountFactory()
    with pytest.raises(ValueError, match="Both"):
        account_store_credentials(account=account, api_key=STORED_KEY, api_secret="")
    account.refresh_from_db()
    assert (account.api_key_encrypted, account.api_secret_encrypted) == ("", "")


def test_repr_of_credentials_hides_the_values():
    credentials = Credentials(ENV_KEY, ENV_SECRET)
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert ENV_KEY not in text
        assert ENV_SECRET not in text
    assert repr(credentials) == "Credentials(api_key=***, api_secret=***)"


def test_credentials_source_never_contains_a_secret(env_account, monkeypatch, secrets_key):
    monkeypatch.setenv("STATARB_CRED_TEST_API_KEY", ENV_KEY)
    monkeypatch.setenv("STATARB_CRED_TEST_API_SECRET", ENV_SECRET)
    stored = ExchangeAccountFactory()
    account_store_credentials(account=stored, api_key=STORED_KEY, api_secret=STORED_SECRET)
    stored.refresh_from_db()
    bare = ExchangeAccountFactory()
    half = ExchangeAccountFactory(api_key_env="ONLY_KEY_VAR")

    assert credentials_source(env_account) == "env: STATARB_CRED_TEST_API_KEY / STATARB_CRED_TEST_API_SECRET"
    assert credentials_source(stored) == "stored encrypted"
    assert credentials_source(bare) == "none"
    assert credentials_source(half) == "env: ONLY_KEY_VAR / ?"
    for account in (env_account, stored, bare, half):
        text = credentials_source(account)
        ciphertexts = (stored.api_key_encrypted, stored.api_secret_encrypted)
        for secret in (ENV_KEY, ENV_SECRET, STORED_KEY, STORED_SECRET, *ciphertexts):
            assert secret not in text
