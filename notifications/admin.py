from django.contrib import admin

from core.admin_tools import ReadOnlyAdmin
from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "channel", "topic", "severity", "status", "attempts", "sent_at")
    list_filter = ("status", "severity", "channel", "topic")
    search_fields = ("text",)
    readonly_fields = ("created_at", "sent_at", "attempts", "last_error")
