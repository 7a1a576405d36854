"""HTTP plumbing shared by the adapters: timeouts per phase, and upstream errors without secrets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
from httpx_sse import SSEError

from backend.providers.base import Endpoint, ProviderError
from backend.providers.client import shared

T = TypeVar("T")

RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}


async def with_phase_timeouts(
    items: AsyncIterator[T], endpoint: Endpoint, first_timeout: float | None = None
) -> AsyncIterator[T]:
    """Yield from items, failing if the first item or any later gap takes longer than allowed.

    Only the waits for items are timed, not the caller's work between them. One timer serves many items:
    it is armed for the limit and, when it fires during a wait that has not lasted that long, moved to
    that wait's end. An asyncio.timeout per item cost a timer and its cancellation for every chunk, about
    a tenth of the server's CPU per relayed chunk (docs/benchmarks.md).
    """
    iterator = aiter(items)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    limit = endpoint.first_byte_timeout if first_timeout is None else max(first_timeout, 0.001)
    phase = "first byte"
    waiting_since: float | None = None  # when the wait in progress started; None between waits
    timer: asyncio.TimerHandle | None = None
    fired = False

    def check() -> None:
        nonlocal timer, fired
        timer = None
        if waiting_since is None:
            return  # the next wait arms a new timer
        due = waiting_since + limit
        if loop.time() + TIMER_SLACK >= due:
            fired = True
            task.cancel()  # lands in the wait: the task is suspended there whenever a wait is in progress
        else:
            timer = loop.call_at(due, check)

    try:
        while True:
            waiting_since = loop.time()
            if timer is None:
                timer = loop.call_at(waiting_since + limit, check)
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                # As asyncio.timeout does: a cancellation of our own becomes the timeout, any other goes on.
                if fired and task.uncancel() == 0:
                    limit_s = endpoint.first_byte_timeout if phase == "first byte" else endpoint.idle_timeout
                    raise ProviderError(
                        f"{endpoint.kind} sent nothing for {limit_s:g}s (waiting for the {phase})",
                        code="timeout",
                        retryable=True,
                    ) from None
                raise
            finally:
                waiting_since = None
            if phase == "first byte":
                phase, limit = "next chunk", endpoint.idle_timeout
                if timer is not None:  # armed for the first byte's limit, which may be the longer
                    timer.cancel()
                    timer = None
            yield item
    finally:
        if timer is not None:
            timer.cancel()


# A timer may run this much before its time (the event loop's clock resolution); not worth a second timer.
TIMER_SLACK = 0.001


# How long the end of a response body may take after the protocol's last event before the connection is
# dropped instead (read_to_end). Providers end it at once; this only bounds one that does not.
END_OF_BODY_SECONDS = 0.5


async def read_to_end(items: AsyncIterator) -> None:
    """Read what follows a stream's last event: the end of the HTTP body, which providers send at once.

    A response closed before its body ended takes its connection with it, so the next reply to that
    provider would open a new one, with a TCP and TLS handshake before its first token. Read to the end,
    the connection goes back to the shared client's pool. A provider that sends more, or never ends the
    body, loses the connection after END_OF_BODY_SECONDS, never the reply.
    """
    with contextlib.suppress(TimeoutError, ProviderError, httpx.HTTPError):
        async with asyncio.timeout(END_OF_BODY_SECONDS):
            async for _ in items:
                pass


def transport_error(endpoint: Endpoint, error: httpx.HTTPError) -> ProviderError:
    if isinstance(error, SSEError):
        # A 200 that is not an event stream (a proxy's page, a non-streaming answer): not worth retrying.
        return ProviderError(f"{endpoint.kind} answered with something other than an event stream", code="malformed")
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return ProviderError(
            f"cannot connect to {endpoint.kind} at {endpoint.base_url}", code="connect", retryable=True
        )
    return ProviderError(f"{endpoint.kind} connection failed: {type(error).__name__}", code="network", retryable=True)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Read the wait an upstream asks for: retry-after-ms, then retry-after (seconds or HTTP date)."""
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
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_retry_delay(body: bytes) -> float | None:
    """Read Gemini's wait from `error.details[].retryDelay` ("35s"), if the body carries one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            if match := _DURATION.match(detail["retryDelay"]):
                return float(match.group(1))
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
        # Gemini names the precise cause (API_KEY_INVALID) in details[].reason.
        for detail in error.get("details") or []:
            if isinstance(detail, dict) and detail.get("reason"):
                code = detail["reason"]
                break
        return str(error.get("message") or ""), str(code)
    return str(data)[:200], ""


def redact(text: str, endpoint: Endpoint) -> str:
    """Remove the endpoint's key from text that came back from upstream, in case it echoes it."""
    if endpoint.api_key and len(endpoint.api_key) >= 4:
        text = text.replace(endpoint.api_key, "[key]")
    return text


async def raise_for_status(endpoint: Endpoint, response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        async with asyncio.timeout(endpoint.idle_timeout):
            body = await response.aread()
    except TimeoutError:
        raise ProviderError(
            f"{endpoint.kind} answered {response.status_code} and then sent nothing for {endpoint.idle_timeout:g}s",
            status=response.status_code,
            code="timeout",
            retryable=True,
        ) from None
    message, code = error_message_from_body(body)
    retryable = response.status_code in RETRYABLE_STATUSES
    if (hint := response.headers.get("x-should-retry")) in ("true", "false"):
        retryable = hint == "true"
    retry_after = parse_retry_after(response.headers)
    if retry_after is None:
        retry_after = parse_retry_delay(body)
    raise ProviderError(
        redact(f"{endpoint.kind} answered {response.status_code}: {message or response.reason_phrase}", endpoint),
        status=response.status_code,
        code=code,
        retryable=retryable,
        retry_after=retry_after,
    )


@contextlib.asynccontextmanager
async def open_stream(
    endpoint: Endpoint,
    url: str,
    *,
    headers: dict[str, str],
    body: dict,
    on_sent: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[tuple[httpx.Response, float]]:
    """POST body and yield (response, seconds left of the first-byte budget); close it however we leave.

    on_sent is awaited once the body is written, before the response is read (ChatRequest.on_sent).
    """
    # Straight to the shared client's transport: the client's own layers (URL and header merging, auth,
    # redirects, cookies, event hooks) do nothing for these calls and cost CPU on each, part of it before
    # the request leaves (docs/benchmarks.md). The client follows no redirects and keeps no cookies either.
    http = shared()
    timeout = {"connect": endpoint.connect_timeout, "read": None, "write": 30.0, "pool": endpoint.connect_timeout}
    extensions = {"timeout": timeout} | ({"trace": sent_tracer(on_sent)} if on_sent is not None else {})
    headers = http.headers | {name.lower(): value for name, value in headers.items()}
    request = httpx.Request("POST", parsed_url(url), headers=headers, content=json_body(body), extensions=extensions)
    started = time.monotonic()
    try:
        async with asyncio.timeout(endpoint.first_byte_timeout):
            response = await http.transport.handle_async_request(request)
            response.request = request
    except TimeoutError:
        raise ProviderError(
            f"{endpoint.kind} sent nothing for {endpoint.first_byte_timeout:g}s (waiting for the first byte)",
            code="timeout",
            retryable=True,
        ) from None
    except httpx.HTTPError as error:
        raise transport_error(endpoint, error) from None
    try:
        await raise_for_status(endpoint, response)
        yield response, endpoint.first_byte_timeout - (time.monotonic() - started)
    except httpx.HTTPError as error:
        raise transport_error(endpoint, error) from None
    finally:
        await response.aclose()


# One encoder for every call, with the options httpx gives a `json=` body (json.dumps with options builds one each time).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def json_body(body: dict) -> bytes:
    return _encode(body).encode()


@functools.lru_cache(maxsize=1024)
def parsed_url(url: str) -> httpx.URL:
    """An endpoint's URL, parsed once (httpx.URL is immutable)."""
    return httpx.URL(url)


def sent_tracer(on_sent: Callable[[], Awaitable[None]]) -> Callable[[str, dict], Awaitable[None]]:
    """httpcore's trace hook (the `trace` request extension), calling on_sent when the request body is out."""

    async def trace(event: str, info: dict) -> None:
        if event.endswith(".send_request_body.complete"):  # "http11." or "http2."
            await on_sent()

    return trace


def malformed(endpoint: Endpoint) -> ProviderError:
    return ProviderError(f"{endpoint.kind} sent a malformed chunk", code="malformed")


def parse_json_chunk(endpoint: Endpoint, data: str) -> dict:
    """Decode one streamed JSON object, or fail as a malformed chunk."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise malformed(endpoint) from None
    if not isinstance(chunk, dict):
        raise malformed(endpoint)
    return chunk
