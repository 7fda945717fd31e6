"""``manage.py telegram_console``: answer the trader's Telegram commands (one process per bot)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.telegram.poller import Poller


class Command(BaseCommand):
    help = ("Long-poll Telegram (getUpdates) and answer /status, /profit, /daily, /balance, /trades, /pairs, /halt, "
            "/flatten, /resume, /confirm in the whitelisted chats. Run exactly one per bot.")

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=None, help="stop after this many polls (default: never)")
        parser.add_argument("--poll-timeout", type=int, default=25, help="seconds Telegram holds an empty poll")

    def handle(self, *args, rounds, poll_timeout, **options):
        if not settings.TELEGRAM_BOT_TOKEN:
            raise CommandError("TELEGRAM_BOT_TOKEN is not set")
        self.stdout.write("answering Telegram commands (Ctrl-C stops)")
        try:
            Poller(poll_timeout_s=poll_timeout).run(rounds=rounds)
        except KeyboardInterrupt:
            self.stdout.write("stopped")
