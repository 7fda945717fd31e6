"""The exchange an account trades on: its paper simulator, or Bybit (demo or real) with its credentials applied."""

from __future__ import annotations

from exchanges.base import TradingExchange
from exchanges.bybit import BybitExchange
from exchanges.errors import NotSupported
from exchanges.factory import trading_exchange
from execution.models import ExchangeAccount
from execution.selectors import Credentials, account_credentials
from pairs.market import MarketView
from pairs.models import StrategyConfig


def account_exchange(
    account: ExchangeAccount,
    credentials: Credentials,
    *,
    timeout_ms: int | None = None,
    enable_rate_limit: bool | None = None,
) -> BybitExchange:
    """The venue adapter that trades for a demo or real ``account`` (get ``credentials`` from
    ``execution.selectors.account_credentials``).

    Demo accounts use the exchange's demo trading, real ones the live API; ``base_url_override`` replaces the REST
    URL in both. Paper accounts have no exchange side, and only one-way position mode is supported (the bots net one
    position per symbol). ``timeout_ms`` and ``enable_rate_limit`` default to the STATARB_EXCHANGE_* settings.
    """
    modes = ExchangeAccount.Mode
    if account.mode not in (modes.DEMO, modes.REAL):
        raise NotSupported(f"Account {account.name!r} is in {account.mode!r} mode: it does not trade on the exchange.")
    if account.position_mode != ExchangeAccount.PositionMode.ONE_WAY:
        raise NotSupported(
            f"Account {account.name!r} is set to {account.position_mode!r} position mode; the bots trade in one-way "
            "mode only (prepare_account switches the exchange account to it)."
        )
    try:
        return trading_exchange(
            account.exchange, api_key=credentials.api_key, api_secret=credentials.api_secret,
            demo=account.mode == modes.DEMO, base_url=account.base_url_override or None, timeout_ms=timeout_ms,
            enable_rate_limit=enable_rate_limit,
        )
    except NotSupported as exc:
        raise NotSupported(f"Account {account.name!r}: {exc}") from None


def account_trading_exchange(account: ExchangeAccount, *, market: MarketView, config: StrategyConfig
                             ) -> TradingExchange:
    """The exchange an account trades on: the paper simulator (priced by ``market`` at its clock), or Bybit (demo /
    real) through ccxt."""
    if account.mode == ExchangeAccount.Mode.PAPER:
        from execution.paper.exchange import paper_exchange_for

        return paper_exchange_for(account, market=market, config=config)
    return account_exchange(account, account_credentials(account=account))
