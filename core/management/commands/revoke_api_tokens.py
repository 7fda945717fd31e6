from django.core.management.base import BaseCommand

from core.commands import shell_operator, user_named
from core.tokens import api_tokens_revoke


class Command(BaseCommand):
    help = "Revoke every API token of USERNAME at once (the user and their other access stay)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = user_named(username, active=False)
        count = api_tokens_revoke(user=user, channel="command", actor_label=shell_operator("revoke_api_tokens"))
        self.stdout.write(f"revoked {count} API token(s) of {username}")
