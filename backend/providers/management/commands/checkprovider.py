"""Send one short test prompt through a site's provider chain and report who answered, or why none did."""

from __future__ import annotations

import asyncio
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.chat import services
from backend.providers.base import ChatMessage, ChatRequest, ProviderError
from backend.providers.chain import ChainRun
from backend.providers.client import get_client
from backend.providers.models import ProviderConfig, endpoints_for
from backend.providers.pricing import cost_of, price_for

TEST_PROMPT = "Reply with one short sentence to confirm you can read this."


async def run_check(run: ChainRun) -> tuple[str, int | None, ProviderError | None]:
    """Stream the test reply; return (text, ms to first token, the failure if every provider failed)."""
    parts: list[str] = []
    first_token_ms = None
    started = time.monotonic()
    failure = None
    try:
        async for text in run.stream():
            if first_token_ms is None:
                first_token_ms = int((time.monotonic() - started) * 1000)
            parts.append(text)
    except ProviderError as error:
        failure = error
    finally:
        await get_client().aclose()  # this loop ends with the command
    return "".join(parts), first_token_ms, failure


class Command(BaseCommand):
    help = "Send a one-line test prompt through a site's provider chain; print who answered, latency, tokens, cost."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("site_key")
        parser.add_argument("--purpose", choices=["chat", "summary"], default="chat")

    def handle(self, *args, **options) -> None:
        site = services.find_site(options["site_key"])
        if site is None:
            raise CommandError(f"no site has the key {options['site_key']!r} (list them with: manage.py sites)")
        purpose = options["purpose"]
        endpoints = endpoints_for(site, purpose)
        if not endpoints:
            raise CommandError(f"{site.name} has no enabled {purpose} provider; add one in the admin or createsite")
        if purpose == "summary" and not site.provider_configs.filter(purpose=ProviderConfig.Purpose.SUMMARY).exists():
            self.stdout.write("No summary chain: summaries use the chat chain.")
        request = ChatRequest(
            system="You are a connectivity check.", messages=[ChatMessage("user", TEST_PROMPT)], max_tokens=32
        )
        run = ChainRun(endpoints, request)
        started = time.monotonic()
        text, first_token_ms, failure = asyncio.run(run_check(run))
        latency_ms = int((time.monotonic() - started) * 1000)
        for number, attempt in enumerate(run.attempts, 1):
            outcome = "ok" if attempt.status == "ok" else f"failed: {attempt.error}"
            self.stdout.write(f"  attempt {number}: {attempt.kind} {attempt.model} ({attempt.latency_ms} ms) {outcome}")
        if failure is not None:
            raise CommandError(f"{purpose} chain failed: {failure.message}")
        endpoint = run.endpoint
        input_tokens, output_tokens, estimated = services.reply_usage(request, text, run.end)
        cost = cost_of(endpoint.kind, endpoint.model, input_tokens, output_tokens)
        if price_for(endpoint.kind, endpoint.model) is None:
            self.stdout.write(f"No price for {endpoint.kind}/{endpoint.model}: add one in the admin (Prices).")
        self.stdout.write(
            f"OK {endpoint.kind} {endpoint.model} answered in {latency_ms} ms (first token {first_token_ms} ms); "
            f"tokens {input_tokens} in / {output_tokens} out{' (estimated)' if estimated else ''}; "
            f"cost {cost} USD; reply: {text.strip()[:200]!r}"
        )
