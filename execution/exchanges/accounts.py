"""The exchange adapter of one trading account: its mode (demo / real), base URL and credentials applied."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from execution.exchanges.ccxt_exchange import CcxtExchange, build_ccxt_client
from execution.exchanges.errors import NotSupported
from statarb_site.secrets import register_secret

if TYPE_CHECKING:
    from execution.models import ExchangeAccount
    from execution.selectors import Credentials

# The order side of CcxtExchange speaks Bybit v5 (orderLinkId, positionIdx, retCodes).
SUPPORTED_EXCHANGES = ("bybit",)


def account_exchange(
    account: ExchangeAccount,
    credentials: Credentials,
    *,
    timeout_ms: int | None = None,
    enable_rate_limit: bool | None = None,
) -> CcxtExchange:
    """A CcxtExchange that trades for ``account`` (get ``credentials`` from execution.selectors.account_credentials).

    Demo accounts use the exchange's demo trading, real ones the live API; ``base_url_override`` replaces the REST
    URL in both. Paper accounts have no exchange side, and only one-way position mode is supported (the bots net one
    position per symbol). ``timeout_ms`` and ``enable_rate_limit`` default to the STATARB_EXCHANGE_* settings.
    """
    from execution.models import ExchangeAccount  # here: importing this module must not need the app registry

    modes = ExchangeAccount.Mode
    if account.mode not in (modes.DEMO, modes.REAL):
        raise NotSupported(f"Account {account.name!r} is in {account.mode!r} mode: it does not trade on the exchange.")
    if account.exchange not in SUPPORTED_EXCHANGES:
        raise NotSupported(
            f"Account {account.name!r}: trading is implemented for {', '.join(SUPPORTED_EXCHANGES)}, "
            f"not {account.exchange!r}."
        )
    if account.position_mode != ExchangeAccount.PositionMode.ONE_WAY:
        raise NotSupported(
            f"Account {account.name!r} is set to {account.position_mode!r} position mode; the bots trade in one-way "
            "mode only (prepare_account switches the exchange account to it)."
        )
    register_secret(credentials.api_key)
    register_secret(credentials.api_secret)
    client = build_ccxt_client(
        account.exchange,
        api_key=credentials.api_key,
        secret=credentials.api_secret,
        demo=account.mode == modes.DEMO,
        base_url=account.base_url_override or None,
        enable_rate_limit=settings.STATARB_EXCHANGE_RATE_LIMIT if enable_rate_limit is None else enable_rate_limit,
        timeout_ms=settings.STATARB_EXCHANGE_TIMEOUT_MS if timeout_ms is None else timeout_ms,
    )
    return CcxtExchange(client)
