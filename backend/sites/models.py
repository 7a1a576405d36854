from __future__ import annotations

import base64
import secrets
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from backend.sites.crypto import EncryptedTextField
from backend.sites.origins import normalize_origins


def new_site_key() -> str:
    """Return a random URL-safe key that never starts with "-", so commands never read it as an option."""
    while (key := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return key


def new_webhook_secret() -> str:
    """Return a secret in the Standard Webhooks form: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def validate_starters(value: list[str]) -> None:
    if not isinstance(value, list) or len(value) > 5:
        raise ValidationError("List at most five starter questions")
    for question in value:
        if not isinstance(question, str) or not question.strip() or len(question) > 120:
            raise ValidationError("Each starter question is text of 1 to 120 characters")


def validate_avatar_url(value: str) -> None:
    if value and not value.startswith("https://"):
        # The widget runs on the site owner's pages: only an https image can load there without warnings.
        raise ValidationError("The avatar must be an https:// image URL")


def validate_origin_list(value: list[str]) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("List at least one allowed origin, such as https://example.com")
    normalize_origins(value)


DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, concise support assistant for this website. "
    "If you do not know the answer, say so and offer to connect the visitor with a person."
)


class Site(models.Model):
    """A website that embeds the widget, with its own origins, appearance and providers."""

    name = models.CharField(max_length=200)
    key = models.CharField(max_length=64, unique=True, default=new_site_key, editable=False)
    allowed_origins = models.JSONField(
        default=list,
        validators=[validate_origin_list],
        help_text="Exact origins allowed to open the chat, such as https://acme.example",
    )
    system_prompt = models.TextField(default=DEFAULT_SYSTEM_PROMPT, blank=True)
    greeting = models.CharField(max_length=500, default="Hi! How can we help?", blank=True)
    title = models.CharField(max_length=100, default="Support", blank=True)
    color = models.CharField(
        max_length=7,
        default="#2563eb",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a colour such as #2563eb")],
    )
    avatar_url = models.URLField(
        max_length=500, blank=True, validators=[validate_avatar_url], help_text="An https:// image shown in the header"
    )
    position = models.CharField(
        max_length=5, choices=[("right", "Bottom right"), ("left", "Bottom left")], default="right"
    )
    starter_questions = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_starters],
        help_text='Up to five questions offered before the first message, e.g. ["How do I reset my password?"]',
    )
    max_reply_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(16), MaxValueValidator(32000)]
    )
    max_message_length = models.PositiveIntegerField(
        default=4000, validators=[MinValueValidator(1), MaxValueValidator(32000)]
    )
    webhook_secret = EncryptedTextField(default=new_webhook_secret, editable=False)
    identity_secret = EncryptedTextField(
        blank=True, help_text="Signs visitor emails (Parley.identify); blank: emails are shown as unverified"
    )
    handoff_timeout = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(10), MaxValueValidator(86400)],
        help_text="Seconds a visitor waits for an agent before the widget offers to leave an email",
    )
    created = models.DateTimeField(auto_now_add=True)
    # Replaced whenever anything a reply is configured by changes (this row, its providers, its quota, the
    # price table): chat connections keep that configuration and re-read it only when this differs
    # (backend/chat/config.py), so a reply need not read it every time.
    config_stamp = models.UUIDField(default=uuid.uuid4, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        if isinstance(self.allowed_origins, list) and self.allowed_origins:
            try:
                self.allowed_origins = normalize_origins(self.allowed_origins)
            except ValidationError as error:
                raise ValidationError({"allowed_origins": error.messages}) from None

    def allows_origin(self, origin: str) -> bool:
        return origin in self.allowed_origins

    def widget_config(self) -> dict:
        """Return the appearance settings the widget receives in the ready frame."""
        return {
            "title": self.title,
            "greeting": self.greeting,
            "color": self.color,
            "avatar": self.avatar_url,
            "position": self.position,
            "starters": self.starter_questions,
        }
