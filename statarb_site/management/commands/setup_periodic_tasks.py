from django.core.management.base import BaseCommand

from core.commands import shell_operator
from statarb_site.periodic import periodic_tasks_setup


class Command(BaseCommand):
    help = "Create the default Celery beat schedules (idempotent; --reset rewrites them to the defaults)."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Rewrite existing schedules to the defaults.")

    def handle(self, *args, reset: bool = False, **options):
        outcome = periodic_tasks_setup(reset=reset, actor_label=shell_operator("setup_periodic_tasks"))
        for verb, names in outcome.items():
            for name in names:
                self.stdout.write(f"{verb}: {name}")
        self.stdout.write(self.style.SUCCESS(f"{len(outcome['created'])} schedule(s) created."))
