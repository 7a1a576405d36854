"""Turn tokens into money with the editable price table; every amount is a Decimal in USD."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from backend.providers.presets import PRESETS

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.000001")
ZERO = Decimal(0)

# Kinds that run on the site owner's own machine cost nothing.
FREE_KINDS = {"lmstudio", "ollama", "kb"}

# Public list prices seen in 2026 (USD per million input / output tokens); seeded into the table by a
# migration and edited in the admin from then on.
SEED_PRICES: list[tuple[str, str, str, str]] = [
    ("openai", "gpt-5", "1.25", "10"),
    ("openai", "gpt-5-mini", "0.25", "2"),
    ("openai", "gpt-4.1", "2", "8"),
    ("openai", "gpt-4o-mini", "0.15", "0.60"),
    ("anthropic", "claude-opus-4-6", "5", "25"),
    ("anthropic", "claude-sonnet-4-6", "3", "15"),
    ("anthropic", "claude-haiku-4-5", "1", "5"),
    ("gemini", "gemini-2.5-pro", "1.25", "10"),
    ("gemini", "gemini-2.5-flash", "0.30", "2.50"),
    ("gemini", "gemini-2.5-flash-lite", "0.10", "0.40"),
    ("deepseek", "deepseek-chat", "0.27", "1.10"),
    ("mistral", "mistral-small-latest", "0.10", "0.30"),
    ("mistral", "mistral-large-latest", "2", "6"),
]


def seed_prices(price_model=None) -> None:
    """Insert or refresh the public list prices (the migration passes its historical model)."""
    if price_model is None:
        from backend.providers.models import Price as price_model
    for kind, model, input_price, output_price in SEED_PRICES:
        price_model.objects.update_or_create(
            kind=kind,
            model=model,
            defaults={"input_per_million": Decimal(input_price), "output_per_million": Decimal(output_price)},
        )


def price_for(kind: str, model: str) -> tuple[Decimal, Decimal] | None:
    """Return (input, output) USD per million tokens, or None when the table has no price."""
    from backend.providers.models import Price

    if kind in FREE_KINDS:
        return ZERO, ZERO
    row = Price.objects.filter(kind=kind, model=model).values_list("input_per_million", "output_per_million").first()
    return row


def cost_usd(prices: tuple[Decimal, Decimal] | None, input_tokens: int, output_tokens: int) -> Decimal:
    """Return the cost of a call at the given prices; an unknown price costs 0 (and is logged by callers)."""
    if prices is None:
        return ZERO
    raw = (prices[0] * input_tokens + prices[1] * output_tokens) / MILLION
    return raw.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def cost_of(kind: str, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """Return what a call to this model cost, at the price table's current prices."""
    return cost_usd(price_for(kind, model), input_tokens, output_tokens)


def known_kinds() -> set[str]:
    return set(PRESETS)
