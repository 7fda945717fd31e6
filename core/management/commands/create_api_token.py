from django.core.management.base import BaseCommand, CommandError

from core.commands import shell_operator, user_named
from core.tokens import MAX_TOKEN_DAYS, api_token_create


class Command(BaseCommand):
    help = (
        "Make an API token for USERNAME (a user in the reporting or viewer role) and print it once, on the last "
        "line; it is stored only as a hash. Use it as the header 'Authorization: Token <token>'."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--days", type=int, default=90, help=f"valid for this many days, 1 to {MAX_TOKEN_DAYS}")

    def handle(self, *args, username, days, **options):
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise CommandError(f"--days must be from 1 to {MAX_TOKEN_DAYS}, got {days}")
        user = user_named(username, permission="monitoring.read_api", command="create_api_token")
        instance, token = api_token_create(user=user, days=days, channel="command",
                                           actor_label=shell_operator("create_api_token"))
        self.stderr.write(f"API token for {username}, expires {instance.expiry:%Y-%m-%d %H:%M} UTC; it is shown "
                          f"only now:")
        self.stdout.write(token)
