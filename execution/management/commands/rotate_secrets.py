from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.audit import audit_record
from core.commands import shell_operator
from core.secrets import SecretsKeyMissing, secrets_key_check
from execution.services.accounts import account_credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored exchange credential with the first key of STATARB_SECRETS_KEY. To rotate: put the "
        "new key first (STATARB_SECRETS_KEY=new,old), run this, then drop the old key."
    )

    def handle(self, *args, **options):
        try:
            secrets_key_check()  # with no credential stored yet, a malformed key was reported as rotated to
            with transaction.atomic():
                count = account_credentials_rotate()
                audit_record(action="rotate_secrets", channel="command", actor_label=shell_operator("rotate_secrets"),
                             summary=f"{count} account(s) re-encrypted with the first key")
        except SecretsKeyMissing as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"re-encrypted the credentials of {count} account(s) with the first key")
