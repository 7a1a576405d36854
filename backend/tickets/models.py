from __future__ import annotations

import uuid

from django.db import models


class Ticket(models.Model):
    """A support ticket, from a conversation or a helpdesk webhook, and its summary by the summary model."""

    class Source(models.TextChoices):
        CONVERSATION = "conversation", "Conversation"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Sentiment(models.TextChoices):
        NEGATIVE = "negative", "Negative"
        NEUTRAL = "neutral", "Neutral"
        POSITIVE = "positive", "Positive"

    class Urgency(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="tickets")
    source = models.CharField(max_length=20, choices=Source.choices)
    reason = models.CharField(max_length=20, blank=True, help_text="Why it was summarized: handoff, close, manual")
    conversation = models.OneToOneField(
        "chat.Conversation", null=True, blank=True, on_delete=models.CASCADE, related_name="ticket"
    )
    # NULL, not "", when absent, so the per-site unique constraints skip tickets without them.
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    webhook_id = models.CharField(max_length=200, null=True, blank=True, help_text="webhook-id that created it")  # noqa: DJ001
    subject = models.CharField(max_length=500, blank=True)
    messages = models.JSONField(default=list, blank=True)
    text = models.TextField(blank=True)
    callback_url = models.CharField(max_length=2000, blank=True)
    # Bumped by the admin's "send the callbacks again", which starts a fresh series of attempts.
    callback_series = models.PositiveSmallIntegerField(default=1)
    # When the next callback attempt is due; NULL when none is (delivered, given up, or no callback_url).
    callback_due = models.DateTimeField(null=True, blank=True)

    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    # Bumped on every change of content: a summary of older content is discarded, not stored.
    version = models.PositiveIntegerField(default=1)
    # A worker holds the ticket until this time; a crashed worker's lease runs out and the ticket is retried.
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Summary attempts for this content")
    error = models.CharField(max_length=500, blank=True)

    summary = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True)
    sentiment = models.CharField(max_length=10, choices=Sentiment.choices, blank=True)
    urgency = models.CharField(max_length=10, choices=Urgency.choices, blank=True)
    language = models.CharField(max_length=50, blank=True)
    next_action = models.TextField(blank=True)

    # What the summary calls cost, for the site's quota and the admin.
    provider = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0, help_text="USD")

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    summarized = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="unique_ticket_external_id_per_site",
            ),
            models.UniqueConstraint(
                fields=["site", "webhook_id"],
                condition=models.Q(webhook_id__isnull=False),
                name="unique_ticket_webhook_id_per_site",
            ),
        ]
        indexes = [
            models.Index(fields=["site", "state", "-created"]),
            models.Index(fields=["site", "urgency", "-created"]),
            models.Index(fields=["site", "category"]),
            models.Index(fields=["state", "lease_until"]),
            models.Index(fields=["callback_due"]),
        ]

    def __str__(self) -> str:
        return self.subject or self.summary[:80] or f"Ticket {self.pk}"

    def summary_dict(self) -> dict | None:
        if self.state != self.State.DONE:
            return None
        return {
            "summary": self.summary,
            "category": self.category,
            "sentiment": self.sentiment,
            "urgency": self.urgency,
            "language": self.language,
            "next_action": self.next_action,
        }


class WebhookReceipt(models.Model):
    """One webhook-id a site has sent, so a redelivery of the same message never summarizes twice."""

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="+")
    webhook_id = models.CharField(max_length=200)
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="receipts")
    received = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "webhook_id"], name="unique_webhook_receipt")]

    def __str__(self) -> str:
        return self.webhook_id


class CallbackAttempt(models.Model):
    """One POST of a ticket's result to its callback_url, kept for the admin."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="callback_attempts")
    version = models.PositiveIntegerField(help_text="The ticket content version whose result was sent")
    series = models.PositiveSmallIntegerField(default=1, help_text="Attempts restart at 1 in each series")
    number = models.PositiveSmallIntegerField()
    url = models.CharField(max_length=2000)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    delivered = models.BooleanField(default=False)
    error = models.CharField(max_length=500, blank=True)
    next_retry_seconds = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created"]
        indexes = [models.Index(fields=["ticket", "version", "series", "number"])]

    def __str__(self) -> str:
        return f"Callback attempt {self.number} for {self.ticket_id}"


class SummaryCall(models.Model):
    """One call to a summary model and what it cost: summary usage counts against the site's quota."""

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="summary_calls")
    ticket = models.ForeignKey(Ticket, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0, help_text="USD")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["site", "created"])]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}: {self.input_tokens}+{self.output_tokens} tokens"
