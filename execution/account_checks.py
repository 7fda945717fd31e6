"""What an exchange account may do with its level and its switch, asked by the admin (``ExchangeAccount.clean``)
and by the bot before it opens anything (a level's flags may change after an account was put on it)."""

from __future__ import annotations

from execution.models import ExchangeAccount, PairTrade


def level_refusal(account: ExchangeAccount) -> str:
    """Why ``account`` may not trade its level ("" when it may): a level whose pairs are only watched, or a level
    that doesn't trade real capital for a real account."""
    level = account.level
    if not level.traded:
        return f"{level} is not traded (its pairs are watched only)"
    if account.mode == ExchangeAccount.Mode.REAL and not level.trades_real_capital:
        return f"{level} doesn't trade real capital: a real account needs a level that does"
    return ""


def disable_refusal(account: ExchangeAccount) -> str:
    """Why ``account`` may not be switched off now ("" when it may): a disabled account's bot doesn't run, so its open
    trades would stay at the exchange unmanaged (no exit, no stop). The kill switch closes them first."""
    if account.pk is None or account.enabled or not ExchangeAccount.objects.filter(pk=account.pk,
                                                                                   enabled=True).exists():
        return ""
    held = PairTrade.objects.filter(account_id=account.pk, state__in=PairTrade.ACTIVE_STATES).count()
    if not held:
        return ""
    return (f"the account holds {held} open trade(s): close them first (a halt that closes the open trades), then "
            "disable it; a disabled account's bot doesn't run")


def venue_change_refusal(account: ExchangeAccount) -> dict[str, str]:
    """Why ``account`` may not move to another venue now, by field ({} when it may): its mode (paper, demo, real) and
    exchange say where its open trades' legs are. Moved under them, the bot would look for the legs, and send their
    closes, where they never were, while the positions stayed where they are, unmanaged. The kill switch closes
    them first."""
    if account.pk is None:
        return {}
    stored = ExchangeAccount.objects.filter(pk=account.pk).values("mode", "exchange").first()
    if stored is None:
        return {}
    moved = [field for field in ("mode", "exchange") if stored[field] != getattr(account, field)]
    if not moved:
        return {}
    held = PairTrade.objects.filter(account_id=account.pk, state__in=PairTrade.ACTIVE_STATES).count()
    if not held:
        return {}
    return {field: (f"the account holds {held} open trade(s) on {stored['exchange']} ({stored['mode']}): close them "
                    f"first (a halt that closes the open trades), then change its {field}; the bot would look for "
                    "their legs on the new venue and leave the positions where they are unmanaged")
            for field in moved}
