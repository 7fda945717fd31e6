import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from execution.models import ExchangeAccount
from pairs.models import Level
from risk.models import RiskLimit

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = (
        "Create what the demo needs on an empty database (idempotent): a paper account trading level 1, "
        "system-wide risk limits, and a staff login for the dashboard (DEBUG only)."
    )

    @transaction.atomic
    def handle(self, *args, **options):
        paper_level = Level.objects.filter(number=1).first()
        if paper_level is None:
            raise CommandError("Level 1 is missing: run `python manage.py migrate` first.")
        account, created = ExchangeAccount.objects.get_or_create(
            name="paper-demo",
            defaults={
                "mode": ExchangeAccount.Mode.PAPER,
                "level": paper_level,
                "capital": Decimal("10000"),
                "per_trade_budget": Decimal("500"),
                "max_concurrent_trades": 5,
            },
        )
        self.stdout.write(f"{'created' if created else 'kept'}: paper account {account.name}")
        _, created = RiskLimit.objects.get_or_create(
            account=None,
            defaults={"daily_loss_limit_pct": 0.03, "max_drawdown_pct": 0.10, "max_open_trades": 20},
        )
        self.stdout.write(f"{'created' if created else 'kept'}: system-wide risk limits")
        self._ensure_demo_login()

    def _ensure_demo_login(self) -> None:
        if not settings.DEBUG:
            self.stdout.write("DEBUG is off: no demo login created (use `manage.py createsuperuser`).")
            return
        users = get_user_model().objects
        password_file = settings.VAR_DIR / "demo-login.txt"
        if users.filter(username=DEMO_USERNAME).exists() and password_file.exists():
            self.stdout.write(f"kept: dashboard login '{DEMO_USERNAME}' (password in {password_file})")
            return
        password = secrets.token_urlsafe(12)
        user = users.filter(username=DEMO_USERNAME).first() or users.create_superuser(DEMO_USERNAME, password=password)
        user.set_password(password)
        user.save()
        password_file.write_text(f"username: {DEMO_USERNAME}\npassword: {password}\n")
        password_file.chmod(0o600)
        self.stdout.write(f"created: dashboard login '{DEMO_USERNAME}' (password in {password_file})")
