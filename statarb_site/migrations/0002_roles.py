"""The role groups (statarb_site.roles): viewer, reporting, trader, admin."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READ = ("monitoring.view_dashboard", "monitoring.read_api")
TRADE = ("execution.close_trade", "execution.halt_account", "risk.add_halt", "risk.clear_halt",
         "pairs.change_pair_level")
ROLES = {"viewer": READ, "reporting": ("monitoring.read_api",), "trader": READ + TRADE, "admin": None}
VIEWED_APPS = ("pairs", "execution", "risk", "notifications", "monitoring", "core", "django_celery_beat")


def forwards(apps, schema_editor):
    # Permissions are made after all migrations (post_migrate); the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        if names is None:
            group.permissions.set(Permission.objects.all())
            continue
        wanted = {tuple(n.split(".", 1)) for n in names}
        chosen = [p for p in Permission.objects.select_related("content_type")
                  if (p.content_type.app_label, p.codename) in wanted]
        if role in ("viewer", "trader"):
            chosen += list(Permission.objects.filter(content_type__app_label__in=VIEWED_APPS,
                                                     codename__startswith="view_"))
        group.permissions.set(chosen)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("statarb_site", "0001_rename_moved_tasks"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("core", "0001_audit_trail"),
        ("pairs", "0010_permissions"),
        ("execution", "0007_permissions"),
        ("risk", "0002_permissions"),
        ("monitoring", "0001_permissions"),
        ("notifications", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
