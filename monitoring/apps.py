from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "monitoring"
    verbose_name = "monitoring (PnL, performance, dashboard)"

    def ready(self) -> None:
        from monitoring.halt_notifications import connect

        connect()  # halts raised and cleared become notifications
