"""What the apps' admins share: read-only records, an audit of every edit, and permission checks for custom actions.

Django's own permissions (add/change/delete/view per model) guard the admin's forms; every add, change and delete
made through them is also written to the audit trail (core.AuditEntry) with the fields that changed, in the same
transaction as the change.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db import models, transaction

from core.audit import audit_record


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record nobody adds, edits or deletes in the admin (trades, orders, fills, funding, snapshots, market data,
    audit): it changes through the services only, which check permissions and leave an audit."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PlainDecimalInput(forms.NumberInput):
    """A stored Decimal as a person writes it: 0 and 0.25, not 0E-12 and 0.250000000000 (a 12-place column)."""

    def format_value(self, value):
        if isinstance(value, Decimal) and value.is_finite():
            text = f"{value:f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return super().format_value(value)


def _model_name(obj) -> str:
    return obj._meta.model_name


class AuditedAdmin(admin.ModelAdmin):
    """An editable table whose every add, change and delete in the admin is audited."""

    formfield_overrides = {models.DecimalField: {"widget": PlainDecimalInput}}

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            fields = sorted(form.changed_data) if form is not None else []
            verb = "change" if change else "add"
            audit_record(action=f"{verb}_{_model_name(obj)}", channel="admin", actor=request.user, target=obj,
                         summary=f"{verb} {obj._meta.verbose_name} {obj}: {', '.join(fields) or 'no field'}",
                         details={"fields": fields})

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_record(action=f"delete_{_model_name(obj)}", channel="admin", actor=request.user, target=obj,
                         summary=f"delete {obj._meta.verbose_name} {obj}")
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                audit_record(action=f"delete_{_model_name(obj)}", channel="admin", actor=request.user, target=obj,
                             summary=f"delete {obj._meta.verbose_name} {obj}")
            super().delete_queryset(request, queryset)
