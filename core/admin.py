from django.contrib import admin

from core.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit trail is append-only: nobody adds, edits or deletes an entry."""

    list_display = ("created_at", "actor_label", "channel", "action", "target_type", "target_id", "summary")
    list_filter = ("channel", "action")
    search_fields = ("actor_label", "summary", "target_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
