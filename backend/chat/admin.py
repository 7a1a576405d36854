"""The agents' console: the conversation list is the inbox, and each conversation page is live."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Case,
    Count,
    DecimalField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Substr
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.timesince import timesince

from backend.agents import access, events, exports, hooks, services
from backend.agents import tickets as agent_tickets
from backend.chat.models import Conversation, Message, Visitor
from backend.sites.models import Site

MAX_REPLY_LENGTH = 8000
WAITING_FIRST = Case(
    When(state=Conversation.State.WAITING, then=Value(0)), default=Value(1), output_field=IntegerField()
)
PREVIEW_LENGTH = 120


class SiteFilter(admin.SimpleListFilter):
    """Filter by site, listing only the sites this user may see."""

    title = "site"
    parameter_name = "site"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        sites = access.filter_by_site(Site.objects.all(), request.user, field="pk")
        return [(str(site.pk), site.name) for site in sites]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() and self.value().isdigit():
            return queryset.filter(site_id=int(self.value()))
        return queryset


class FeedbackFilter(admin.SimpleListFilter):
    title = "visitor feedback"
    parameter_name = "feedback"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("good", "Rated good"), ("bad", "Rated bad"), ("any", "Any rating"), ("none", "No rating")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        rated = Message.objects.filter(conversation=OuterRef("pk"))
        if self.value() == "good":
            return queryset.filter(Exists(rated.filter(feedback=1)))
        if self.value() == "bad":
            return queryset.filter(Exists(rated.filter(feedback=-1)))
        if self.value() == "any":
            return queryset.filter(Exists(rated.filter(feedback__isnull=False)))
        if self.value() == "none":
            return queryset.exclude(Exists(rated.filter(feedback__isnull=False)))
        return queryset


def visitor_label(visitor: Visitor) -> str:
    if visitor.name and visitor.email:
        label = f"{visitor.name} <{visitor.email}>"
    else:
        label = visitor.name or visitor.email or f"Visitor #{visitor.pk}"
    if visitor.email:
        label += " ✓" if visitor.email_verified else " (unverified)"
    return label


class SiteScopedAdmin(admin.ModelAdmin):
    """Show agents only their sites' rows; every object view goes through this queryset."""

    site_field = "site"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return access.filter_by_site(super().get_queryset(request), request.user, self.site_field)

    def has_privacy_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.delete_visitor")

    def delete_visitor_data_of(self, request: HttpRequest, visitor_ids: set[int], queryset: QuerySet) -> Any:
        """Ask for confirmation, then delete the visitors with their conversations and messages."""
        if request.POST.get("confirm") == "yes":
            counts = exports.delete_visitors(visitor_ids)
            self.message_user(
                request,
                f"Deleted {counts.get('visitor', 0)} visitor(s), {counts.get('conversation', 0)} conversation(s) "
                f"and {counts.get('message', 0)} message(s).",
                messages.SUCCESS,
            )
            return None
        visitors = Visitor.objects.filter(pk__in=visitor_ids).annotate(
            conversation_count=Count("conversations", distinct=True)
        )
        context = self.admin_site.each_context(request) | {
            "title": "Delete visitor data",
            "opts": self.model._meta,
            "visitors": [(visitor_label(v), v.conversation_count) for v in visitors],
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "action": request.POST.get("action"),
        }
        return TemplateResponse(request, "admin/agents/confirm_privacy_delete.html", context)


@admin.register(Conversation)
class ConversationAdmin(SiteScopedAdmin):
    list_display = ["state_column", "site", "visitor_column", "preview", "message_count", "cost", "last_activity"]
    list_display_links = ["state_column", "preview"]
    list_filter = [SiteFilter, "state", "last_activity", FeedbackFilter]
    search_fields = ["messages__text", "visitor__email"]
    list_select_related = ["site", "visitor"]
    list_per_page = 50
    actions = [
        "close_selected",
        "hand_back_selected",
        "summarize_selected",
        "export_json",
        "export_csv",
        "delete_visitor_data",
    ]
    change_list_template = "admin/chat/conversation/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        last = Message.objects.filter(conversation=OuterRef("pk")).order_by("-created").values("text")[:1]
        return (
            super()
            .get_queryset(request)
            .select_related("site", "visitor")
            .annotate(
                message_count=Count("messages"),
                total_cost=Coalesce(Sum("messages__cost"), Value(0), output_field=DecimalField()),
                last_text=Substr(Subquery(last), 1, PREVIEW_LENGTH),
            )
        )

    def get_ordering(self, request: HttpRequest) -> list:
        # Waiting conversations first, longest-waiting on top; then the most recently active.
        return [WAITING_FIRST.asc(), F("waiting_since").asc(nulls_last=True), "-last_activity"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # Search in a subquery: joining messages into the annotated list would multiply its counts and costs.
        if not search_term:
            return queryset, False
        matching, _ = super().get_search_results(request, Conversation.objects.all(), search_term)
        return queryset.filter(pk__in=matching.values("pk")), False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        return super().changelist_view(request, {"title": "Inbox", **(extra_context or {})})

    @admin.display(description="state", ordering=WAITING_FIRST)
    def state_column(self, conversation: Conversation) -> str:
        label = conversation.get_state_display()
        if conversation.state == Conversation.State.WAITING and conversation.waiting_since:
            label = f"Waiting {timesince(conversation.waiting_since, timezone.now())}"
        if conversation.contact_left_at and conversation.state != Conversation.State.CLOSED:
            label += " · left an email"
        return label

    @admin.display(description="visitor")
    def visitor_column(self, conversation: Conversation) -> str:
        return visitor_label(conversation.visitor)

    @admin.display(description="last message")
    def preview(self, conversation: Conversation) -> str:
        text = conversation.last_text or ""
        return text + ("…" if len(text) >= PREVIEW_LENGTH else "") or "(no messages)"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.message_count

    @admin.display(description="cost (USD)", ordering="total_cost")
    def cost(self, conversation: Conversation) -> str:
        return f"${conversation.total_cost:.6f}"

    # -- actions -------------------------------------------------------------------------------------------
    @admin.action(description="Close selected conversations", permissions=["change"])
    def close_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._change_states(request, queryset, services.close, "closed")

    @admin.action(description="Summarize selected conversations into tickets", permissions=["change"])
    def summarize_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for pk in ids:
            agent_tickets.queue_summary(pk, agent_tickets.MANUAL)
        self.message_user(request, f"{len(ids)} conversation(s) queued for a summary.", messages.SUCCESS)

    @admin.action(description="Hand selected conversations back to the bot", permissions=["change"])
    def hand_back_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._change_states(request, queryset, services.hand_back, "handed back to the bot")

    def _change_states(self, request: HttpRequest, queryset: QuerySet, change: Any, done: str) -> None:
        changed = [c for c in (change(pk) for pk in queryset.values_list("pk", flat=True)) if c is not None]
        for conversation in changed:
            if change is services.close:
                agent_tickets.queue_summary(conversation.pk, agent_tickets.CLOSE)
            events.send_sync(events.state_events(conversation))
        self.message_user(request, f"{len(changed)} conversation(s) {done}.", messages.SUCCESS)

    @admin.action(description="Export transcripts as JSON", permissions=["view"])
    def export_json(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return json_download(exports.transcripts(queryset.order_by("created")), "conversations")

    @admin.action(description="Export transcripts as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return csv_download(exports.transcripts_csv(queryset.order_by("created")), "conversations")

    @admin.action(description="Delete the visitors' data (privacy request)", permissions=["privacy"])
    def delete_visitor_data(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self.delete_visitor_data_of(request, set(queryset.values_list("visitor_id", flat=True)), queryset)

    # -- the conversation page -----------------------------------------------------------------------------
    def get_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("<uuid:object_id>/export.json", view(self.export_one_json), name="chat_conversation_export_json"),
            path("<uuid:object_id>/export.csv", view(self.export_one_csv), name="chat_conversation_export_csv"),
            *super().get_urls(),
        ]

    def conversation_or_404(self, request: HttpRequest, object_id: Any) -> Conversation:
        """Return a conversation of the user's sites; others do not exist for them."""
        conversation = self.get_object(request, str(object_id))
        if conversation is None:
            raise Http404("No such conversation.")
        if not self.has_view_or_change_permission(request, conversation):
            raise PermissionDenied
        return conversation

    def export_one_json(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        conversation = self.conversation_or_404(request, object_id)
        return json_download(exports.transcript(conversation), f"conversation-{conversation.pk}")

    def export_one_csv(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        conversation = self.conversation_or_404(request, object_id)
        return csv_download(exports.transcripts_csv([conversation]), f"conversation-{conversation.pk}")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        conversation = self.conversation_or_404(request, object_id)
        if request.method == "POST":
            if not self.has_change_permission(request, conversation):
                raise PermissionDenied
            self.act(request, conversation)
            return HttpResponseRedirect(request.path)
        transcript = list(conversation.messages.order_by("created"))
        context = self.admin_site.each_context(request) | {
            "title": f"Conversation with {visitor_label(conversation.visitor)}",
            "subtitle": conversation.site.name,
            "opts": self.model._meta,
            "original": conversation,
            "conversation": conversation,
            "visitor": visitor_label(conversation.visitor),
            "transcript": transcript,
            "total_cost": sum((m.cost for m in transcript), start=0),
            "can_change": self.has_change_permission(request, conversation),
            "max_reply_length": MAX_REPLY_LENGTH,
            "panels": hooks.conversation_panels(request, conversation),
            "live_path": f"/ws/agent/conversations/{conversation.pk}/",
        }
        return TemplateResponse(request, "admin/chat/conversation/conversation.html", context)

    def act(self, request: HttpRequest, conversation: Conversation) -> None:
        """Handle the conversation page's form: a reply, or one of the state buttons."""
        action = request.POST.get("action", "reply")
        if action == "reply":
            text = request.POST.get("reply", "").strip()
            if not text:
                self.message_user(request, "Write a reply first.", messages.ERROR)
                return
            if len(text) > MAX_REPLY_LENGTH:
                self.message_user(request, f"Replies are limited to {MAX_REPLY_LENGTH:,} characters.", messages.ERROR)
                return
            message, changed = services.agent_reply(conversation.pk, request.user, text)
            delivered = events.send_sync(
                ([*events.state_events(changed)] if changed else []) + events.message_events(conversation, message)
            )
            if not delivered:
                self.message_user(
                    request, "Saved, but live delivery failed: the visitor sees it on reconnect.", messages.WARNING
                )
            return
        changes = {
            "take_over": lambda pk: services.take_over(pk, request.user),
            "hand_back": services.hand_back,
            "close": services.close,
        }
        if action in hooks.CONVERSATION_ACTIONS:
            self.message_user(request, hooks.CONVERSATION_ACTIONS[action](request, conversation), messages.SUCCESS)
            return
        if action not in changes:
            self.message_user(request, "Unknown action.", messages.ERROR)
            return
        changed = changes[action](conversation.pk)
        if changed is not None:
            if action == "close":
                agent_tickets.queue_summary(conversation.pk, agent_tickets.CLOSE)
            events.send_sync(events.state_events(changed))
            self.message_user(request, f"The conversation is now: {changed.get_state_display()}.", messages.SUCCESS)


def json_download(data: dict, name: str) -> HttpResponse:
    response = HttpResponse(json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}.json"'
    return response


def csv_download(text: str, name: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


@admin.register(Visitor)
class VisitorAdmin(SiteScopedAdmin):
    list_display = ["id", "site", "name", "email", "email_verified", "created", "last_seen"]
    list_filter = [SiteFilter, "email_verified"]
    search_fields = ["email", "name"]
    exclude = ["token_hash"]
    readonly_fields = ["site", "email_verified", "created", "last_seen"]
    actions = ["delete_visitor_data"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        # The privacy action replaces the stock delete, which agents could not use on linked rows.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Delete the visitors' data (privacy request)", permissions=["privacy"])
    def delete_visitor_data(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self.delete_visitor_data_of(request, set(queryset.values_list("pk", flat=True)), queryset)
