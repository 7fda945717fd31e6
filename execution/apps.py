from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "execution"

    def ready(self) -> None:
        from execution import worker_signals  # noqa: F401 - a stopping worker gives its accounts' leases back
