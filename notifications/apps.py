from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notifications"

    def ready(self) -> None:
        from django.core import checks

        from notifications import worker_signals  # noqa: F401 - connects the worker start/stop notifications

        checks.register(routing_check)


def routing_check(app_configs=None, **kwargs):
    """``manage.py check`` (and every command that runs the checks: migrate, runserver) names a mistyped routing
    setting; at run time such a setting is logged and read leniently (``notifications.routing``)."""
    from django.core import checks

    from notifications.routing import routing_problems

    return [checks.Error(problem, id="notifications.E001") for problem in routing_problems()]
