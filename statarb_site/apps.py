from django.apps import AppConfig


class StatarbSiteConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "statarb_site"
    verbose_name = "statarb"
