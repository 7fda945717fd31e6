import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.audit import audit_record
from core.commands import shell_operator
from core.tokens import credentials_changed
from execution.models import ExchangeAccount
from pairs.models import Level
from risk.models import RiskLimit

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = (
        "Create what the demo needs on an empty database (idempotent): a paper account trading level 1, "
        "system-wide risk limits, and a staff login for the dashboard (DEBUG only)."
    )

    operator = ""

    @transaction.atomic
    def handle(self, *args, **options):
        self.operator = shell_operator("seed_demo")
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
        if created:
            audit_record(action="add_exchangeaccount", channel="command", actor_label=self.operator, target=account,
                         summary=f"demo paper account {account.name} created (level 1, capital 10000)")
        limits, created = RiskLimit.objects.get_or_create(
            account=None,
            defaults={"daily_loss_limit_pct": 0.03, "max_drawdown_pct": 0.10, "max_open_trades": 20},
        )
        self.stdout.write(f"{'created' if created else 'kept'}: system-wide risk limits")
        if created:
            audit_record(action="add_risklimit", channel="command", actor_label=self.operator, target=limits,
                         summary="demo system-wide risk limits created: daily loss 3 %, drawdown 10 %, 20 open trades")
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
        existing = users.filter(username=DEMO_USERNAME).first()
        with transaction.atomic():
            user = existing or users.create_superuser(DEMO_USERNAME, password=password)
            user.set_password(password)
            user.save()
            change = f"demo login {DEMO_USERNAME} " + ("given a new password" if existing else "created (superuser)")
            audit_record(action="change_password" if existing else "add_user", channel="command",
                         actor_label=self.operator, target=user, summary=change)
            if existing:
                credentials_changed(user=user, change=change, channel="command", actor_label=self.operator)
        password_file.write_text(f"username: {DEMO_USERNAME}\npassword: {password}\n")
        password_file.chmod(0o600)
        self.stdout.write(f"created: dashboard login '{DEMO_USERNAME}' (password in {password_file})")
