from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def hash_token(token: str) -> str:
    """Hash a visitor token for storage: tokens carry 256 random bits, so one SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_visitor_token() -> str:
    return secrets.token_urlsafe(32)


class Visitor(models.Model):
    """Someone chatting through a site's widget, known by a random token kept in their browser."""

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="visitors")
    token_hash = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    # True only when the site proved the email with an identity hash (docs/agents.md).
    email_verified = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name or self.email or f"Visitor {self.pk}"


class Conversation(models.Model):
    class State(models.TextChoices):
        BOT = "bot", "Bot"
        WAITING = "waiting", "Waiting for an agent"
        AGENT = "agent", "Agent"
        CLOSED = "closed", "Closed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="conversations")
    visitor = models.ForeignKey(Visitor, on_delete=models.CASCADE, related_name="conversations")
    state = models.CharField(max_length=10, choices=State.choices, default=State.BOT)
    created = models.DateTimeField(auto_now_add=True)
    last_activity = models.DateTimeField(auto_now_add=True, db_index=True)
    # Set when the visitor asks for a person; cleared when an agent takes over or the bot gets it back.
    waiting_since = models.DateTimeField(null=True, blank=True)
    # Set when the visitor left an email because no agent answered: the conversation is kept as a ticket.
    contact_left_at = models.DateTimeField(null=True, blank=True)
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )

    class Meta:
        indexes = [
            models.Index(fields=["visitor", "-last_activity"]),
            models.Index(fields=["site", "state", "-last_activity"]),
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk}"


# While a person has (or is about to have) the conversation, the bot must not answer.
SILENT_STATES = frozenset({Conversation.State.AGENT, Conversation.State.WAITING})


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "Visitor"
        ASSISTANT = "assistant", "Assistant"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"

    # The id is chosen before the reply streams, so the reply is written to the database once, at its end.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETE)
    # NULL, not "", for messages without a client id (agents, system), so the unique constraint skips them.
    client_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    reply_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    author = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0, help_text="USD")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Provider calls made for this reply")
    sources = models.JSONField(default=list, blank=True, help_text="Articles the reply was grounded on")
    feedback = models.SmallIntegerField(null=True, blank=True, help_text="The visitor's rating: 1 or -1")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=models.Q(client_id__isnull=False),
                name="unique_client_id_per_conversation",
            )
        ]
        indexes = [models.Index(fields=["conversation", "created"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:50]}"

    def as_frame(self) -> dict:
        """Return the message as it appears in the ready frame's history."""
        frame = {
            "id": str(self.id),
            "role": self.role,
            "text": self.text,
            "status": self.status,
            "created": self.created.isoformat(),
        }
        if self.role == self.Role.AGENT:
            frame["author"] = self.author
        if self.role == self.Role.ASSISTANT:
            frame["feedback"] = self.feedback
        return frame
