from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from core.admin_tools import ReadOnlyAdmin
from core.audit import audit_record
from notifications.models import Delivery, Notification
from notifications.services import nudge_after_commit


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fk_name = "notification"
    extra = 0
    can_delete = False
    fields = ("channel", "target", "status", "attempts", "next_attempt_at", "sent_at", "maybe_sent", "last_error")
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
    """Deliveries as the sender left them; one that gave up (a chat removed, the bot blocked) is sent again from
    here once its destination is fixed (permission notifications.change_delivery, audited)."""

    list_display = ("id", "notification", "channel", "target", "status", "attempts", "next_attempt_at", "sent_at",
                    "last_error")
    list_filter = ("status", "channel")
    search_fields = ("target", "last_error")
    list_select_related = ("notification",)
    actions = ("send_again",)

    def has_send_again_permission(self, request) -> bool:
        return request.user.has_perm("notifications.change_delivery")

    @admin.action(description="Send again (the failed ones, from the part that failed)", permissions=["send_again"])
    def send_again(self, request, queryset):
        with transaction.atomic():
            failed = list(queryset.select_for_update().filter(status=Delivery.Status.FAILED))
            ids = [d.pk for d in failed]
            Delivery.objects.filter(pk__in=ids).update(status=Delivery.Status.PENDING, next_attempt_at=timezone.now(),
                                                       lease_owner="", lease_until=None)
            Notification.objects.filter(deliveries__pk__in=ids).update(status=Notification.Status.PENDING)
            for delivery in failed:
                audit_record(action="send_again", channel="admin", actor=request.user, target=delivery,
                             summary=f"delivery {delivery.pk} ({delivery.channel}:{delivery.target}) sent again "
                                     f"after: {delivery.last_error}")
            if failed:
                nudge_after_commit()
        self.message_user(request, f"{len(failed)} failed delivery(ies) will be sent again"
                                   + ("" if len(failed) == queryset.count() else " (the others had not failed)") + ".")
