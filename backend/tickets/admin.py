from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from backend.agents.scoping import SiteScopedMixin
from backend.tickets.models import CallbackAttempt, Ticket
from backend.tickets.services import enqueue_callback, retry_ticket

SUMMARY_FIELDS = ["summary", "category", "sentiment", "urgency", "language", "next_action"]


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    fields = [
        "created",
        "version",
        "series",
        "number",
        "url",
        "status_code",
        "delivered",
        "error",
        "next_retry_seconds",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["created"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Ticket)
class TicketAdmin(SiteScopedMixin, admin.ModelAdmin):
    list_display = ["__str__", "site", "source", "state", "urgency", "category", "sentiment", "created"]
    list_filter = ["urgency", "category", "state", "sentiment", "source", "site"]
    search_fields = ["subject", "summary", "external_id"]
    date_hierarchy = "created"
    fieldsets = [
        ("Summary", {"fields": [*SUMMARY_FIELDS, "state", "error", "summarized"]}),
        (
            "Ticket",
            {"fields": ["site", "source", "reason", "conversation", "external_id", "subject", "messages", "text"]},
        ),
        (
            "Delivery",
            {
                "fields": [
                    "webhook_id",
                    "callback_url",
                    "callback_series",
                    "callback_due",
                    "attempts",
                    "version",
                    "lease_until",
                ]
            },
        ),
        ("Usage", {"fields": ["provider", "model", "input_tokens", "output_tokens", "cost"]}),
        (None, {"fields": ["created", "updated"]}),
    ]
    readonly_fields = [name for fieldset in fieldsets for name in fieldset[1]["fields"]]
    inlines = [CallbackAttemptInline]
    actions = ["retry_summary", "retry_callback"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry: summarize the selected tickets again")
    def retry_summary(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        for ticket in queryset:
            retry_ticket(ticket)
        self.message_user(request, f"{len(queryset)} ticket(s) queued for a new summary.", messages.SUCCESS)

    @admin.action(description="Retry: send the selected tickets' callbacks again")
    def retry_callback(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        count = 0
        for ticket in queryset.exclude(callback_url="").exclude(state=Ticket.State.PENDING):
            # A fresh series of attempts; the earlier ones stay in the log.
            Ticket.objects.filter(pk=ticket.pk).update(
                callback_series=F("callback_series") + 1, callback_due=timezone.now()
            )
            enqueue_callback(ticket.pk)
            count += 1
        self.message_user(request, f"{count} callback(s) queued.", messages.SUCCESS)
