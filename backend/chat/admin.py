from django.contrib import admin

from backend.chat.models import Conversation, Message, Visitor


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created", "role", "text", "status", "provider", "model", "input_tokens", "output_tokens"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["created"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "site", "visitor", "state", "last_activity"]
    list_filter = ["state", "site"]
    readonly_fields = ["site", "visitor", "created", "last_activity"]
    inlines = [MessageInline]


@admin.register(Visitor)
class VisitorAdmin(admin.ModelAdmin):
    list_display = ["id", "site", "name", "email", "created", "last_seen"]
    list_filter = ["site"]
    search_fields = ["email", "name"]
    exclude = ["token_hash"]
