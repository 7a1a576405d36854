"""A site's ordered providers as one stream: retries before the first token, then the next provider."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.conf import settings

from backend.providers.adapters import stream_chat
from backend.providers.base import ChatRequest, Endpoint, ProviderError, StreamEnd
from backend.providers.http import redact

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One call to one provider, as the logs and the reply record it."""

    kind: str
    model: str
    status: str  # "ok" | "error"
    error: str  # reason without secrets, "" when ok
    latency_ms: int


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: a random wait up to base * 2^(attempt-1), at most cap."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class ChainRun:
    """Stream one reply through endpoints in order; see docs/providers.md for the rules."""

    def __init__(self, endpoints: list[Endpoint], request: ChatRequest) -> None:
        self.endpoints = list(endpoints)
        self.request = request
        self.endpoint: Endpoint | None = None
        self.attempts: list[Attempt] = []
        self.end: StreamEnd | None = None
        self.started_text = False
        self.max_attempts = settings.PROVIDER_MAX_ATTEMPTS
        self.budget = settings.PROVIDER_RETRY_BUDGET_SECONDS
        self.base = settings.PROVIDER_RETRY_BASE_SECONDS
        self.cap = settings.PROVIDER_RETRY_MAX_WAIT_SECONDS

    async def stream(self) -> AsyncIterator[str]:
        """Yield the reply's text chunks from the first provider that starts answering."""
        if not self.endpoints:
            raise ProviderError("no provider is configured", code="not_configured")
        started = time.monotonic()
        failures: list[ProviderError] = []
        for endpoint in self.endpoints:
            for number in range(1, self.max_attempts + 1):
                self.endpoint = endpoint
                attempt_started = time.monotonic()
                if settings.DEBUG:  # message text is personal data: only on a developer's machine
                    log.debug(
                        "provider request: provider=%s model=%s system=%r messages=%r",
                        endpoint.kind,
                        endpoint.model,
                        self.request.system,
                        [(m.role, m.content) for m in self.request.messages],
                    )
                try:
                    async with contextlib.aclosing(self._one_call(endpoint)) as texts:
                        async for text in texts:
                            self.started_text = True
                            yield text
                except ProviderError as error:
                    self._record(endpoint, attempt_started, error)
                    if self.started_text:
                        raise  # the visitor saw text: another provider would start a different reply
                    failures.append(error)
                    wait = self._wait_before_retry(error, number, started)
                    if wait is None:
                        break  # hand over to the next provider
                    await asyncio.sleep(wait)
                    continue
                except (asyncio.CancelledError, GeneratorExit):
                    self._record(endpoint, attempt_started, ProviderError("cancelled", code="cancelled"))
                    raise
                self._record(endpoint, attempt_started, None)
                return
        last = failures[-1]
        reasons = "; ".join(dict.fromkeys(f.message for f in failures))
        raise ProviderError(
            f"every provider failed: {reasons}", status=last.status, code=last.code, retry_after=last.retry_after
        )

    async def _one_call(self, endpoint: Endpoint) -> AsyncIterator[str]:
        # aclosing: when the consumer stops early, the upstream request is closed now, not at garbage collection.
        async with contextlib.aclosing(stream_chat(endpoint, self.request)) as items:
            try:
                async for item in items:
                    if isinstance(item, StreamEnd):
                        self.end = item
                    elif item:
                        yield item
            except ProviderError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                # A chunk of an unexpected shape: the adapter trusted a field that was not there.
                raise ProviderError(
                    f"{endpoint.kind} sent a malformed chunk ({type(error).__name__})", code="malformed"
                ) from None

    def _wait_before_retry(self, error: ProviderError, number: int, started: float) -> float | None:
        """Return how long to wait before calling the same provider again, or None to move on."""
        if not error.retryable or number >= self.max_attempts:
            return None
        wait = error.retry_after if error.retry_after is not None else backoff_seconds(number, self.base, self.cap)
        if time.monotonic() - started + wait > self.budget:
            return None  # the upstream asks for more patience than the visitor has
        return wait

    def _record(self, endpoint: Endpoint, attempt_started: float, error: ProviderError | None) -> None:
        latency_ms = int((time.monotonic() - attempt_started) * 1000)
        reason = redact(error.message, endpoint) if error else ""
        attempt = Attempt(endpoint.kind, endpoint.model, "error" if error else "ok", reason, latency_ms)
        self.attempts.append(attempt)
        log.info(
            "provider attempt: provider=%s model=%s status=%s attempt=%s latency_ms=%s http_status=%s reason=%s",
            attempt.kind,
            attempt.model,
            attempt.status,
            len(self.attempts),
            latency_ms,
            error.status if error else 200,
            reason or "-",
        )
