from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "monitoring"
    verbose_name = "monitoring (PnL, performance, guard, dashboard)"

    def ready(self) -> None:
        from execution.events import trade_finished
        from monitoring.guard import receivers
        from monitoring.halt_notifications import connect
        from risk.events import halt_cleared

        trade_finished.connect(receivers.on_trade_finished, dispatch_uid="guard:trade_finished")
        halt_cleared.connect(receivers.on_halt_cleared, dispatch_uid="guard:halt_cleared")
        connect()  # halts raised and cleared become notifications
