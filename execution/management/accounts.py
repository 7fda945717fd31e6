"""The ``--account NAME`` option of the management commands that act on one account or on all of them."""

from django.core.management.base import CommandError

from execution.models import ExchangeAccount


def account_option(name: str | None, *, option: str = "--account") -> ExchangeAccount | None:
    """The account called ``name``, or None (every account) when the option was not given; an unknown name is a
    CommandError that lists the accounts there are."""
    if name is None:
        return None
    account = ExchangeAccount.objects.filter(name=name).first()
    if account is None:
        names = ", ".join(ExchangeAccount.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise CommandError(f"{option} {name}: no such account (accounts: {names})")
    return account
