"""``python manage.py performance_report [--account NAME | --mode MODE] [--start] [--end] --out FILE.png|.pdf|.html``"""

from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from core.api import readable_errors
from core.commands import writable_output_path
from monitoring.report import FORMATS, performance_report_write
from monitoring.scopes import dashboard_scope


class Command(BaseCommand):
    help = ("The trading performance report of one account (or of one mode's accounts combined): KPIs, equity and "
            "drawdown, monthly returns, PnL by pair and by exit reason, as PNG, PDF or HTML.")

    def add_arguments(self, parser):
        parser.add_argument("--account", help="Account name or id (default: real accounts combined, else demo, "
                                              "else paper)")
        parser.add_argument("--mode", choices=("paper", "demo", "real"), help="Combine the accounts of this mode")
        parser.add_argument("--level", type=int, help="With --mode: only the accounts trading this level")
        parser.add_argument("--start", help="From this ISO date or date-time (UTC)")
        parser.add_argument("--end", help="Up to this ISO date (inclusive) or date-time (exclusive)")
        parser.add_argument("--out", required=True, help="FILE.png, FILE.pdf or FILE.html")

    def handle(self, *args, **options):
        if not options["out"].lower().endswith(FORMATS):
            raise CommandError(f"--out {options['out']}: the report is written as {', '.join(FORMATS)}")
        out = writable_output_path("--out", options["out"])
        if options["account"] and (options["mode"] or options["level"] is not None):
            raise CommandError("--account names one account: leave out --mode and --level")
        params = {k: str(options[k]) for k in ("account", "mode", "level", "start", "end") if options[k] is not None}
        try:
            scope = dashboard_scope(params)
        except ValidationError as error:
            raise CommandError(readable_errors(error.detail)) from error
        summary = performance_report_write(scope=scope, out=out)
        self.stdout.write(f"{summary.label}: {summary.total_trades} trades, written to {out}")
