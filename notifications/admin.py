from django.contrib import admin

from core.admin_tools import ReadOnlyAdmin
from notifications.models import Delivery, Notification


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fk_name = "notification"
    extra = 0
    can_delete = False
    fields = ("channel", "target", "status", "attempts", "next_attempt_at", "sent_at", "last_error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "topic", "severity", "status", "attempts", "sent_at")
    list_filter = ("status", "severity", "topic")
    search_fields = ("text",)
    readonly_fields = ("created_at", "sent_at", "attempts", "last_error")
    inlines = [DeliveryInline]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "notification", "channel", "target", "status", "attempts", "next_attempt_at", "sent_at")
    list_filter = ("status", "channel")
    search_fields = ("target", "last_error")
    list_select_related = ("notification",)
