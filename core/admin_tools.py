"""What the apps' admins share: read-only records, an audit of every edit, and permission checks for custom actions.

Django's own permissions (add/change/delete/view per model) guard the admin's forms; every add, change and delete
made through them is also written to the audit trail (core.AuditEntry) with the fields that changed and their values
before and after, in the same transaction as the change.
"""

from __future__ import annotations

import re
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction

from core.audit import audit_record
from core.secrets import redact


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


# Columns whose values never go to the trail, whatever admin edits them (a password's hash, an encrypted credential).
_UNSHOWN = re.compile(r"password|encrypted|digest", re.IGNORECASE)
_SHOWN_CHARACTERS = 120  # of one value in the summary; the details keep it whole


def _values(obj, names: list[str]) -> dict[str, str]:
    """The stored values of the model columns among ``names`` (a form's own fields, such as a new API key, and
    many-to-many fields are left out), as text: a related row by what it shows, known secrets masked."""
    values = {}
    for name in names:
        try:
            field = obj._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if not field.concrete or field.many_to_many or _UNSHOWN.search(name):
            continue
        value = getattr(obj, name) if field.is_relation else field.value_from_object(obj)
        values[name] = redact("" if value is None else PlainDecimalInput().format_value(value)
                              if isinstance(value, Decimal) else str(value))
    return values


def _change_summary(before: dict[str, str], after: dict[str, str], fields: list[str]) -> str:
    def shown(text: str) -> str:
        return text if len(text) <= _SHOWN_CHARACTERS else text[:_SHOWN_CHARACTERS] + "..."

    return ", ".join(f"{name} {shown(before.get(name, ''))!r} -> {shown(after[name])!r}" if name in after else name
                     for name in fields) or "no field"


class _SeenField(forms.CharField):
    """What the form was opened on: never a change of the row (not in the audit's or the history's changed fields)."""

    def has_changed(self, initial, data) -> bool:
        return False


def _refusing_stale_edits(form_class: type[forms.ModelForm]) -> type[forms.ModelForm]:
    """``form_class`` that carries the row's ``updated_at`` as the person saw it and refuses a save when the row
    changed since: two people editing one row each saved every field as their form showed it, so the second save
    put back what the first had changed, silently."""

    class RefusingStaleEdits(form_class):
        seen_updated_at = _SeenField(required=False, widget=forms.HiddenInput)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stored = getattr(self.instance, "updated_at", None)
            self.fields["seen_updated_at"].initial = stored.isoformat() if stored else ""

        def clean(self):
            data = super().clean()
            seen, stored = data.get("seen_updated_at"), getattr(self.instance, "updated_at", None)
            if seen and stored and seen != stored.isoformat():
                raise forms.ValidationError(
                    f"{self.instance} was changed by someone else after this form was opened (at "
                    f"{stored:%Y-%m-%d %H:%M:%S} UTC; see the audit entries): nothing was saved. Open it again and "
                    "make your change on what is stored now.")
            return data

    return RefusingStaleEdits


class AuditedAdmin(admin.ModelAdmin):
    """An editable table whose every add, change and delete in the admin is audited."""

    formfield_overrides = {models.DecimalField: {"widget": PlainDecimalInput}}
    # True on tables only people edit (they have updated_at): an edit of a row changed since its form was opened is
    # refused rather than saved over the other change.
    refuse_stale_edits = False

    def get_form(self, request, obj=None, change=False, **kwargs):
        if self.refuse_stale_edits and obj is not None:
            kwargs["form"] = _refusing_stale_edits(kwargs.get("form", self.form))
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            fields = sorted(form.changed_data) if form is not None else []
            # What was stored, read again: an auditor asks what a limit was before someone changed it, not only that
            # it changed (the form has already written the new values onto ``obj``).
            stored = type(obj)._default_manager.filter(pk=obj.pk).first() if change and obj.pk else None
            before = _values(stored, fields) if stored is not None else {}
            super().save_model(request, obj, form, change)
            after = _values(obj, fields)
            if change:  # a field the form changed but this save left as it was (a pair's level: its own service)
                for name in [name for name in after if before.get(name) == after[name]]:
                    del after[name]
                    before.pop(name, None)
            verb = "change" if change else "add"
            audit_record(action=f"{verb}_{_model_name(obj)}", channel="admin", actor=request.user, target=obj,
                         summary=f"{verb} {obj._meta.verbose_name} {obj}: "
                                 + (_change_summary(before, after, fields) if change else ", ".join(fields)
                                    or "no field"),
                         details={"fields": fields, "before": before, "after": after} if change else
                         {"fields": fields, "after": after})

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
