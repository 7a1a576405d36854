"""Per-site caps and limits, the period counters that enforce them, reservations, and the usage ledger."""

from __future__ import annotations

import uuid
import zoneinfo
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

MICROS = Decimal(1_000_000)

DEFAULT_QUOTA_MESSAGE = "The assistant is unavailable for now. Leave your email address and a person will answer you."


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(f"{value!r} is not a known time zone (use a name such as Europe/Paris)") from None


def to_micros(amount: Decimal) -> int:
    """Return a USD amount as whole micro-dollars, rounding down (caps are never rounded up)."""
    return int((amount * MICROS).to_integral_value(rounding="ROUND_FLOOR"))


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS).quantize(Decimal("0.000001"))


class SiteQuota(models.Model):
    """A site's caps and limits; created on demand with the defaults below."""

    site = models.OneToOneField("sites.Site", on_delete=models.CASCADE, primary_key=True, related_name="quota")
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="Days and months of the caps are calendar periods in this time zone, such as Europe/Paris",
    )
    daily_token_cap = models.PositiveBigIntegerField(null=True, blank=True, help_text="Blank: no cap")
    monthly_token_cap = models.PositiveBigIntegerField(null=True, blank=True, help_text="Blank: no cap")
    daily_cost_cap = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD; blank: no cap",
    )
    monthly_cost_cap = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD; blank: no cap",
    )
    visitor_messages_per_minute = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)], help_text="Messages one visitor may send per minute"
    )
    ip_messages_per_minute = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)], help_text="Messages one client IP may send per minute"
    )
    ip_connections = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1)], help_text="Chat connections one client IP may hold open"
    )
    max_history_messages = models.PositiveIntegerField(
        default=40,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Most earlier messages of a conversation sent with each prompt (CHAT_HISTORY_MAX_MESSAGES caps it)",
    )
    quota_message = models.TextField(
        default=DEFAULT_QUOTA_MESSAGE, help_text="What visitors read when a cap is reached"
    )

    class Meta:
        verbose_name = "quota settings"
        verbose_name_plural = "quota settings"

    def __str__(self) -> str:
        return f"Quota settings of {self.site}"

    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def token_cap(self, period: str) -> int | None:
        return self.daily_token_cap if period == UsageCounter.Period.DAY else self.monthly_token_cap

    def cost_cap(self, period: str) -> Decimal | None:
        return self.daily_cost_cap if period == UsageCounter.Period.DAY else self.monthly_cost_cap


class UsageCounter(models.Model):
    """Tokens and cost billed and reserved for one site in one calendar day or month."""

    class Period(models.TextChoices):
        DAY = "day", "Day"
        MONTH = "month", "Month"

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="usage_counters")
    period = models.CharField(max_length=5, choices=Period.choices)
    start = models.DateField(help_text="First day of the period, in the site's time zone")
    tokens = models.BigIntegerField(default=0)
    # Money in whole micro-dollars: integer arithmetic is exact on every database, unlike SQLite's decimals.
    cost_micros = models.BigIntegerField(default=0)
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_cost_micros = models.BigIntegerField(default=0)
    warned_at = models.DateTimeField(null=True, blank=True, help_text="When 80% of a cap was first reached")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "period", "start"], name="unique_counter_per_period")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.period} {self.start}"

    @property
    def cost(self) -> Decimal:
        return from_micros(self.cost_micros)


class Reservation(models.Model):
    """An upper bound of one reply's usage, held against the day and month counters until settled."""

    class State(models.TextChoices):
        HELD = "held", "Held"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released after expiry"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="reservations")
    day = models.ForeignKey(UsageCounter, on_delete=models.CASCADE, related_name="+")
    month = models.ForeignKey(UsageCounter, on_delete=models.CASCADE, related_name="+")
    tokens = models.BigIntegerField()
    cost_micros = models.BigIntegerField()
    max_reply_tokens = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.HELD)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["site", "state", "expires"])]

    def __str__(self) -> str:
        return f"Reservation {self.pk} ({self.state})"


class UsageRecord(models.Model):
    """One provider call in the ledger: who asked, which model answered, and what it cost."""

    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="usage_records")
    conversation = models.ForeignKey(
        "chat.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    day = models.DateField(help_text="The day, in the site's time zone")
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0, help_text="USD")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10)
    attempts = models.PositiveSmallIntegerField(default=1)
    created = models.DateTimeField(default=timezone.now)
    # Unique, so a settlement retried after a lost connection writes the call once (the Redis ledger has no
    # reservation row to tell it whether the first attempt reached the database).
    hold = models.UUIDField(
        null=True, blank=True, unique=True, editable=False, help_text="The reservation this call settled"
    )

    class Meta:
        indexes = [models.Index(fields=["site", "day"]), models.Index(fields=["site", "conversation"])]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.input_tokens}+{self.output_tokens} tokens"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens
