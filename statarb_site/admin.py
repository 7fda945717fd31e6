"""The admin of the parts statarb doesn't own: the beat schedule (django-celery-beat), API tokens (knox), users and
roles (auth groups).

Their stock admins let anyone who can open the page run every action (a viewer could run or disable the guard's
schedule) and audit nothing; here each action needs the permission to change what it changes and is audited.
"""

from __future__ import annotations

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from knox.models import AuthToken

from core.admin_tools import AuditedAdmin, ReadOnlyAdmin
from core.audit import audit_record
from core.permissions import READ_API
from core.tokens import MAX_TOKEN_DAYS, api_token_create, api_tokens_revoke, credentials_changed


def _audit_tasks(request, queryset, verb: str) -> None:
    for task in queryset:
        audit_record(action=f"{verb}_periodic_task", channel="admin", actor=request.user, target=task,
                     summary=f"{verb} periodic task {task.name} ({task.task})")


class PeriodicTaskAdmin(AuditedAdmin, beat_admin.PeriodicTaskAdmin):
    actions = ("enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks")

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request, queryset):
        with transaction.atomic():
            _audit_tasks(request, queryset, "enable")
            super().enable_tasks(request, queryset)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request, queryset):
        with transaction.atomic():
            _audit_tasks(request, queryset, "disable")
            super().disable_tasks(request, queryset)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request, queryset):
        with transaction.atomic():
            _audit_tasks(request, queryset, "toggle")
            super().toggle_tasks(request, queryset)

    @admin.action(description="Run selected tasks now", permissions=["change"])
    def run_tasks(self, request, queryset):
        self.celery_app.loader.import_default_modules()
        if any(self.celery_app.tasks.get(task.task) is None for task in queryset):
            # django-celery-beat's action then sends none of them and names the task it doesn't know: nothing ran,
            # so nothing is audited (the trail said they had been run).
            return super().run_tasks(request, queryset)
        with transaction.atomic():  # a broker that refuses the message takes the audit back with it
            _audit_tasks(request, queryset, "run")
            return super().run_tasks(request, queryset)


class IntervalScheduleAdmin(AuditedAdmin, beat_admin.IntervalScheduleAdmin):
    pass


class CrontabScheduleAdmin(AuditedAdmin, beat_admin.CrontabScheduleAdmin):
    pass


class SolarScheduleAdmin(AuditedAdmin, beat_admin.SolarScheduleAdmin):
    pass


class ClockedScheduleAdmin(AuditedAdmin, beat_admin.ClockedScheduleAdmin):
    pass


class AuthTokenAddForm(forms.ModelForm):
    days = forms.IntegerField(min_value=1, max_value=MAX_TOKEN_DAYS, initial=90, help_text="Valid for this many days.")

    class Meta:
        model = AuthToken
        fields = ("user",)

    def clean_user(self):
        user = self.cleaned_data["user"]
        if not user.is_active or not user.has_perm(READ_API):
            raise forms.ValidationError(f"{user} may not read the API: give them the reporting or viewer role first.")
        return user


class AuthTokenAdmin(admin.ModelAdmin):
    """Tokens are made here or by ``manage.py create_api_token``; the token is shown once, in the message after it
    was made, and never again: only a hash and its first characters (its key) are stored."""

    list_display = ("token_key", "user", "created", "expiry")
    search_fields = ("token_key", "user__username")
    raw_id_fields = ("user",)

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = AuthTokenAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("user", "days") if obj is None else ("token_key", "user", "created", "expiry")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("token_key", "user", "created", "expiry")

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # The service makes the row (hash, key, expiry); the form's unsaved instance takes its place.
        created, token = api_token_create(user=form.cleaned_data["user"], days=form.cleaned_data["days"],
                                          channel="admin", actor=request.user, actor_label=request.user.get_username())
        obj.pk, obj.digest, obj.token_key, obj.expiry = created.pk, created.digest, created.token_key, created.expiry
        obj._state.adding, obj._state.db = False, created._state.db
        self.message_user(request, f"API token for {created.user} (shown only now, copy it): {token}",
                          messages.WARNING)

    def response_add(self, request, obj, post_url_continue=None):
        # Not the stock "was added successfully" message: it names the token by its stored hash.
        return HttpResponseRedirect(reverse("admin:knox_authtoken_changelist"))

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_record(action="revoke_api_token", channel="admin", actor=request.user, target=obj.user,
                         summary=f"API token {obj.token_key}... of {obj.user} revoked")
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for token in queryset.select_related("user"):
                audit_record(action="revoke_api_token", channel="admin", actor=request.user, target=token.user,
                             summary=f"API token {token.token_key}... of {token.user} revoked")
            super().delete_queryset(request, queryset)


class AccessAttemptAdmin(AuditedAdmin, axes_admin.AccessAttemptAdmin):
    """Deleting a lock-out's attempts lets the user (or address) log in again: it needs the delete permission and is
    audited; the stock clean-up action needs it too."""

    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request, queryset):
        with transaction.atomic():
            audit_record(action="cleanup_expired_attempts", channel="admin", actor=request.user,
                         summary="expired login attempts cleaned up")
        super().cleanup_expired_attempts(request, queryset)


class AccessLogAdmin(ReadOnlyAdmin, axes_admin.AccessLogAdmin):
    """The history of logins is evidence: nobody edits or deletes it here."""


class AccessFailureLogAdmin(ReadOnlyAdmin, axes_admin.AccessFailureLogAdmin):
    pass


class GrantsAuditedAdmin(AuditedAdmin):
    """Audits which roles and permissions an edit granted and took away, not only that the field changed: the
    many-to-many rows are written after ``save_model`` (in ``save_related``), so they are compared there."""

    grant_fields: tuple[str, ...] = ()

    def save_related(self, request, form, formsets, change):
        obj = form.instance
        before = {name: self._grants(obj, name) for name in self.grant_fields} if change else {}
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            for name in self.grant_fields:
                after = self._grants(obj, name)
                added, removed = sorted(after - before.get(name, set())), sorted(before.get(name, set()) - after)
                if added or removed:
                    audit_record(action=f"grant_{obj._meta.model_name}_{name}", channel="admin", actor=request.user,
                                 target=obj, details={"field": name, "added": added, "removed": removed},
                                 summary=f"{name} of {obj._meta.verbose_name} {obj}: added {', '.join(added) or 'none'}"
                                         f"; removed {', '.join(removed) or 'none'}")

    @staticmethod
    def _grants(obj, name: str) -> set[str]:
        related = getattr(obj, name).all()
        if related.model._meta.model_name == "permission":
            return {f"{app}.{code}" for app, code in related.values_list("content_type__app_label", "codename")}
        return {str(item) for item in related}


class GroupAdmin(GrantsAuditedAdmin, BaseGroupAdmin):
    """A role: changing its permissions changes what every member may do, so each grant is audited."""

    grant_fields = ("permissions",)


class UserAdmin(GrantsAuditedAdmin, BaseUserAdmin):
    grant_fields = ("groups", "user_permissions")
    actions = ("revoke_api_tokens",)

    def has_revoke_tokens_permission(self, request) -> bool:
        return request.user.has_perm("knox.delete_authtoken")

    def user_change_password(self, request, id, form_url=""):
        # Django saves the password, then logs (and we audit) in log_change: one transaction, so a password is never
        # changed without its audit.
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)

    def log_change(self, request, obj, message):
        # The password form doesn't go through save_model; Django logs it here, and so do we.
        if request.path.rstrip("/").endswith("/password"):
            change = (f"password of {obj.get_username()} changed" if obj.has_usable_password() else
                      f"password-based login of {obj.get_username()} disabled")
            audit_record(action="change_password", channel="admin", actor=request.user, target=obj, summary=change)
            credentials_changed(user=obj, change=change, channel="admin", actor=request.user,
                                actor_label=request.user.get_username())
        return super().log_change(request, obj, message)

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if change and "is_active" in form.changed_data and not obj.is_active:
                credentials_changed(user=obj, change=f"{obj.get_username()} deactivated", channel="admin",
                                    actor=request.user, actor_label=request.user.get_username())

    @admin.action(description="Revoke the API tokens of the selected users", permissions=["revoke_tokens"])
    def revoke_api_tokens(self, request, queryset):
        revoked = sum(api_tokens_revoke(user=user, channel="admin", actor=request.user,
                                        actor_label=request.user.get_username()) for user in queryset)
        self.message_user(request, f"Revoked {revoked} API token(s).")


for model, model_admin in ((PeriodicTask, PeriodicTaskAdmin), (IntervalSchedule, IntervalScheduleAdmin),
                           (CrontabSchedule, CrontabScheduleAdmin), (SolarSchedule, SolarScheduleAdmin),
                           (ClockedSchedule, ClockedScheduleAdmin), (AuthToken, AuthTokenAdmin),
                           (get_user_model(), UserAdmin), (Group, GroupAdmin), (AccessAttempt, AccessAttemptAdmin),
                           (AccessLog, AccessLogAdmin), (AccessFailureLog, AccessFailureLogAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
