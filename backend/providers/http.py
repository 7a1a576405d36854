"""HTTP plumbing shared by the adapters: timeouts per phase, and upstream errors without secrets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC
from typing import TypeVar

import httpx

from backend.providers.base import Endpoint, ProviderError

T = TypeVar("T")

RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}


async def with_phase_timeouts(items: AsyncIterator[T], endpoint: Endpoint) -> AsyncIterator[T]:
    """Yield from items, failing if the first item or any later gap takes longer than allowed."""
    iterator = aiter(items)
    timeout = endpoint.first_byte_timeout
    phase = "first byte"
    while True:
        try:
            async with asyncio.timeout(timeout):
                item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ProviderError(
                f"{endpoint.kind} sent nothing for {timeout:g}s (waiting for the {phase})",
                code="timeout",
                retryable=True,
            ) from None
        yield item
        timeout = endpoint.idle_timeout
        phase = "next chunk"


def transport_error(endpoint: Endpoint, error: httpx.HTTPError) -> ProviderError:
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return ProviderError(
            f"cannot connect to {endpoint.kind} at {endpoint.base_url}", code="connect", retryable=True
        )
    return ProviderError(f"{endpoint.kind} connection failed: {type(error).__name__}", code="network", retryable=True)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Read the wait an upstream asks for: retry-after-ms, then retry-after (seconds or HTTP date)."""
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    if value := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def error_message_from_body(body: bytes) -> tuple[str, str]:
    """Return (message, code) from an upstream error body in any of the providers' shapes."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip(), ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error, ""
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or error.get("status") or ""
        return str(error.get("message") or ""), str(code)
    return str(data)[:200], ""


async def raise_for_status(endpoint: Endpoint, response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    body = await response.aread()
    message, code = error_message_from_body(body)
    retryable = response.status_code in RETRYABLE_STATUSES
    if (hint := response.headers.get("x-should-retry")) in ("true", "false"):
        retryable = hint == "true"
    raise ProviderError(
        f"{endpoint.kind} answered {response.status_code}: {message or response.reason_phrase}",
        status=response.status_code,
        code=code,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers),
    )
