from django.core.management.base import BaseCommand
from django.db import transaction

from core.audit import audit_record
from core.commands import shell_operator
from execution.management.accounts import account_option
from execution.services.daily_totals import daily_totals_rebuild


class Command(BaseCommand):
    help = (
        "Recompute the daily trade totals (the per-account, per-UTC-day sums the performance figures read) from the "
        "trades: of one account (--account NAME) or of all. Needed only after trades were written around the ORM "
        "(raw SQL); every other write keeps them exact. Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", help="the account's name (default: every account)")

    def handle(self, *args, account=None, **options):
        target = account_option(account)
        scope = target.name if target else "every account"
        with transaction.atomic():
            rows = daily_totals_rebuild(account_ids=[target.pk] if target else None)
            audit_record(action="rebuild_daily_totals", channel="command",
                         actor_label=shell_operator("rebuild_daily_totals"), target=target,
                         summary=f"daily trade totals of {scope} rebuilt from the trades: {rows} day row(s)")
        self.stdout.write(f"rebuilt the daily trade totals of {scope}: {rows} day row(s)")
