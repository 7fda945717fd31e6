from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "monitoring"
    verbose_name = "monitoring (PnL, performance, guard, dashboard)"

    def ready(self) -> None:
        from django.core import checks

        from execution.events import trade_finished
        from monitoring.guard import receivers
        from monitoring.halt_notifications import connect
        from risk.events import halt_cleared

        trade_finished.connect(receivers.on_trade_finished, dispatch_uid="guard:trade_finished")
        halt_cleared.connect(receivers.on_halt_cleared, dispatch_uid="guard:halt_cleared")
        connect()  # halts raised and cleared become notifications
        checks.register(telegram_console_check)


def telegram_console_check(app_configs=None, **kwargs):
    """``manage.py check`` (and every command that runs the checks: telegram_console, migrate) names a mistyped
    entry of the Telegram console's settings, which would otherwise be dropped without a word."""
    from django.core import checks

    from monitoring.telegram.console import console_problems

    return [checks.Error(problem, id="monitoring.E001") for problem in console_problems()]
