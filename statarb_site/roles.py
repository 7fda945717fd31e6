"""The roles, as groups of permissions (README, "Security"):

| role | may |
|---|---|
| viewer | see the dashboard, read the API, view every table in the admin (with staff status) |
| reporting | read the API (a reporting tool's token: Power BI, Grafana) |
| trader | what a viewer may; close trades, halt, resume and flatten accounts, clear halts, move pairs between levels |
| admin | everything |

``roles_sync`` creates the groups and gives them exactly these permissions; the migration statarb_site/0002 runs it
once, ``manage.py setup_roles`` again after new permissions were added. Staff status (to open the admin at all) and
superuser status stay per user.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

# Apps whose tables a viewer may see.
VIEWED_APPS = ("pairs", "execution", "risk", "notifications", "monitoring", "core", "django_celery_beat")
READ = ("monitoring.view_dashboard", "monitoring.read_api")
TRADE = ("execution.close_trade", "execution.halt_account", "risk.add_halt", "risk.clear_halt",
         "pairs.change_pair_level")
ROLES: dict[str, tuple[str, ...]] = {
    "viewer": READ,
    "reporting": ("monitoring.read_api",),
    "trader": READ + TRADE,
    "admin": (),  # every permission
}
WITH_VIEW = ("viewer", "trader")


def _permissions(names) -> list[Permission]:
    wanted = {tuple(name.split(".", 1)) for name in names}
    found = [p for p in Permission.objects.select_related("content_type")
             if (p.content_type.app_label, p.codename) in wanted]
    missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
    if missing:
        raise LookupError(f"permissions not found (migrate first): {sorted('.'.join(m) for m in missing)}")
    return found


@transaction.atomic
def roles_sync() -> dict[str, int]:
    """Create the role groups and set their permissions to exactly what ROLES says; returns the count per role."""
    counts = {}
    for role, names in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        if role == "admin":
            permissions = list(Permission.objects.all())
        else:
            permissions = _permissions(names)
            if role in WITH_VIEW:
                permissions += list(Permission.objects.filter(content_type__app_label__in=VIEWED_APPS,
                                                              codename__startswith="view_"))
        # One permission may come twice (monitoring.view_dashboard is named and is a view_ one too): count each once.
        permissions = list(set(permissions))
        group.permissions.set(permissions)
        counts[role] = len(permissions)
    return counts
