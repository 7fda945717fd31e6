from django.core.management.base import BaseCommand, CommandError

from core.commands import operator_label, user_named
from execution.management.accounts import account_option
from monitoring.guard.control import accounts_halt


class Command(BaseCommand):
    help = (
        "Kill switch: halt one account (--account NAME) or every account: no new entries and no signal exits but "
        "stop-losses; with --flatten every open trade is closed, both legs, reduce-only. Holds until `manage.py "
        "resume`. Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", help="the account's name (default: every account)")
        parser.add_argument("--flatten", action="store_true", help="also close every open trade")
        parser.add_argument("--reason", required=True, help="why; shown on the halt, the dashboard and in the chat")
        parser.add_argument("--user", help="act as this user, who needs the permission execution.halt_account "
                            "(default: the shell account running the command, which is recorded)")

    def handle(self, *args, account=None, flatten=False, reason="", user=None, **options):
        if not reason.strip():
            raise CommandError("--reason must say why (it is shown on the halt and in the audit)")
        target = account_option(account)
        actor = user_named(user, permission="execution.halt_account", command="halt") if user else None
        halt = accounts_halt(account=target, flatten=flatten, reason=reason, user=actor, channel="command",
                             actor_label=operator_label("halt", actor))
        scope = target.name if target else "every account"
        self.stdout.write(f"halted {scope}" + (" and flattening its open trades" if flatten else "")
                          + f" (halt {halt.pk}); resume with: manage.py resume" + (f" --account {target.name}"
                                                                                     if target else ""))

