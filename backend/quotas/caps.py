"""Parse the cap and time-zone values owners type (createsite flags), with errors a person can act on."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

from backend.quotas.models import validate_timezone

TOKEN_CAPS = ("daily_token_cap", "monthly_token_cap")
COST_CAPS = ("daily_cost_cap", "monthly_cost_cap")


def parse_token_cap(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a whole number of tokens, got {raw!r}") from None
    if value < 0:
        raise ValidationError(f"{name} cannot be negative, got {raw!r}")
    return value


def parse_cost_cap(name: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except (TypeError, InvalidOperation):
        raise ValidationError(f"{name} must be an amount in USD such as 5 or 2.50, got {raw!r}") from None
    if not value.is_finite():
        raise ValidationError(f"{name} must be an amount in USD such as 5 or 2.50, got {raw!r}")
    if value < 0:
        raise ValidationError(f"{name} cannot be negative, got {raw!r}")
    if value.as_tuple().exponent < -6:
        raise ValidationError(f"{name} has more than 6 decimal places: {raw!r}")
    if value >= Decimal(10) ** 6:
        raise ValidationError(f"{name} must be below 1,000,000 USD, got {raw!r}")
    return value


def parse_quota_options(options: dict) -> dict:
    """Return SiteQuota field values from the given raw strings (None or absent means unset)."""
    values: dict = {}
    for field in TOKEN_CAPS:
        if options.get(field) is not None:
            values[field] = parse_token_cap("--" + field.replace("_", "-"), options[field])
    for field in COST_CAPS:
        if options.get(field) is not None:
            values[field] = parse_cost_cap("--" + field.replace("_", "-"), options[field])
    if options.get("timezone") is not None:
        validate_timezone(options["timezone"])
        values["timezone"] = options["timezone"]
    return values
