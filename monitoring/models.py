"""Monitoring owns no table; ``Access`` only carries the permissions of the dashboard and the reporting API."""

from __future__ import annotations

from django.db import models


class Access(models.Model):
    """No table (managed=False): the permissions that open the dashboard and the reporting API to a role."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can see the monitoring dashboard"),
            ("read_api", "Can read the reporting API"),
        ]

    def __str__(self) -> str:
        return "dashboard and API access"
