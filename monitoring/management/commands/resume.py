from django.core.management.base import BaseCommand

from core.commands import operator_label, user_named
from execution.management.accounts import account_option
from monitoring.guard.control import accounts_resume


class Command(BaseCommand):
    help = (
        "Release the kill switch: clear the halts raised by hand (here, in the admin, the API or Telegram) on one "
        "account (--account NAME) or the system-wide ones. Halts the guard raised are cleared in the admin, one by "
        "one. Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", help="the account's name (default: the system-wide halts only; each "
                            "account's own halts need --account)")
        parser.add_argument("--user", help="act as this user, who needs the permission risk.clear_halt "
                            "(default: the shell account running the command, which is recorded)")

    def handle(self, *args, account=None, user=None, **options):
        target = account_option(account)
        actor = user_named(user, permission="risk.clear_halt", command="resume") if user else None
        count = accounts_resume(account=target, user=actor, channel="command",
                                actor_label=operator_label("resume", actor))
        scope = f"account {target.name}" if target else "the system-wide halts (accounts' own halts are kept)"
        self.stdout.write(f"cleared {count} halt(s): {scope}")
