from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from backend.providers.base import Endpoint
from backend.providers.presets import KIND_CHOICES, PRESETS, get_preset
from backend.sites.crypto import EncryptedTextField


def validate_base_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{value!r} is not a valid base URL (expected http:// or https:// and a host)")


TIMEOUT_RANGE = [MinValueValidator(0.1), MaxValueValidator(600)]


class ProviderConfig(models.Model):
    """One provider in a site's ordered chain for chat or for summaries."""

    class Purpose(models.TextChoices):
        CHAT = "chat", "Chat"
        SUMMARY = "summary", "Summary"

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="provider_configs")
    purpose = models.CharField(max_length=10, choices=Purpose.choices, default=Purpose.CHAT)
    position = models.PositiveSmallIntegerField(default=0, help_text="Lower positions are tried first")
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    base_url = models.CharField(
        max_length=500, blank=True, validators=[validate_base_url], help_text="Leave blank for the kind's default"
    )
    model = models.CharField(max_length=200, blank=True, help_text="Leave blank for the kind's default model")
    api_key = EncryptedTextField(blank=True)
    enabled = models.BooleanField(default=True)
    # Per-site timeouts in seconds; empty means the server-wide PROVIDER_*_TIMEOUT setting.
    connect_timeout = models.FloatField(
        null=True, blank=True, validators=TIMEOUT_RANGE, help_text="Seconds to open the connection"
    )
    first_byte_timeout = models.FloatField(
        null=True, blank=True, validators=TIMEOUT_RANGE, help_text="Seconds to wait for the first streamed chunk"
    )
    idle_timeout = models.FloatField(
        null=True, blank=True, validators=TIMEOUT_RANGE, help_text="Seconds allowed between two streamed chunks"
    )

    class Meta:
        ordering = ["site", "purpose", "position", "id"]
        indexes = [models.Index(fields=["site", "purpose", "position"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.effective_model}"

    @property
    def effective_model(self) -> str:
        return self.model or (PRESETS[self.kind].default_model if self.kind in PRESETS else "")

    def clean(self) -> None:
        super().clean()
        try:
            preset = get_preset(self.kind)
        except ValueError as error:
            raise ValidationError({"kind": str(error)}) from None
        if preset.needs_key and not self.api_key:
            raise ValidationError({"api_key": f"{preset.label} needs an API key"})

    def endpoint(self) -> Endpoint:
        preset = get_preset(self.kind)
        base_url = self.base_url or preset.base_url
        if preset.protocol == "kb":
            # The help-article answerer searches its own site's articles: the site is its address.
            base_url = preset.base_url + self.site.key
        return Endpoint(
            kind=self.kind,
            protocol=preset.protocol,
            base_url=base_url,
            model=self.effective_model,
            api_key=self.api_key or "",
            connect_timeout=self.connect_timeout or settings.PROVIDER_CONNECT_TIMEOUT,
            first_byte_timeout=self.first_byte_timeout or settings.PROVIDER_FIRST_BYTE_TIMEOUT,
            idle_timeout=self.idle_timeout or settings.PROVIDER_IDLE_TIMEOUT,
        )


def endpoints_for(site, purpose: str = ProviderConfig.Purpose.CHAT) -> list[Endpoint]:
    """Return the site's enabled chain for a purpose; a site without a summary chain summarises with chat's."""
    configs = ProviderConfig.objects.filter(site=site, enabled=True).select_related("site").order_by("position", "id")
    chain = [c.endpoint() for c in configs if c.purpose == purpose]
    if not chain and purpose == ProviderConfig.Purpose.SUMMARY:
        chain = [c.endpoint() for c in configs if c.purpose == ProviderConfig.Purpose.CHAT]
    return chain


class Price(models.Model):
    """What a model costs, in USD per million tokens; editable in the admin."""

    kind = models.CharField(max_length=20, choices=KIND_CHOICES, help_text="Provider kind")
    model = models.CharField(max_length=200, help_text="Model name as sent to the provider")
    input_per_million = models.DecimalField(max_digits=10, decimal_places=4)
    output_per_million = models.DecimalField(max_digits=10, decimal_places=4)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "model"]
        constraints = [models.UniqueConstraint(fields=["kind", "model"], name="unique_price_per_kind_model")]

    def __str__(self) -> str:
        return f"{self.kind}/{self.model}: {self.input_per_million}/{self.output_per_million} USD per M"
