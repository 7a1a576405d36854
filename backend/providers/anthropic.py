"""The Anthropic Messages wire protocol: SSE with event names, a top-level system prompt."""

from __future__ import annotations

from httpx_sse import EventSource

from backend.providers.base import ChatRequest, Endpoint, ProviderError, ProviderStream, StreamEnd, alternating_turns
from backend.providers.http import malformed, open_stream, parse_json_chunk, read_to_end, redact, with_phase_timeouts

API_VERSION = "2023-06-01"
# In-stream error types worth another try on the same provider (the HTTP equivalents are 429, 500, 529).
RETRYABLE_ERRORS = {"overloaded_error", "api_error", "rate_limit_error"}


def build_body(endpoint: Endpoint, request: ChatRequest) -> dict:
    body: dict = {
        "model": endpoint.model,
        "max_tokens": request.max_tokens,
        "stream": True,
        "messages": [{"role": m.role, "content": m.content} for m in alternating_turns(request.messages)],
    }
    if request.system:
        body["system"] = request.system
    return body


async def stream(endpoint: Endpoint, request: ChatRequest) -> ProviderStream:
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "x-api-key": endpoint.api_key,
        "anthropic-version": API_VERSION,
    }
    url = endpoint.base_url.rstrip("/") + "/v1/messages"
    input_tokens = output_tokens = 0
    stop_reason = ""
    finished = False
    body = build_body(endpoint, request)
    async with open_stream(endpoint, url, headers=headers, body=body, on_sent=request.on_sent) as (response, left):
        events = with_phase_timeouts(EventSource(response).aiter_sse(), endpoint, left)
        async for sse in events:
            event = sse.event
            if event == "ping":
                continue
            if event == "error":
                error = parse_json_chunk(endpoint, sse.data).get("error") or {}
                kind = str(error.get("type") or "") if isinstance(error, dict) else ""
                message = str(error.get("message") or "") if isinstance(error, dict) else str(error)
                raise ProviderError(
                    redact(f"{endpoint.kind} stream error: {kind}: {message}", endpoint),
                    code=kind,
                    retryable=kind in RETRYABLE_ERRORS,
                )
            if event == "message_start":
                usage = (parse_json_chunk(endpoint, sse.data).get("message") or {}).get("usage") or {}
                input_tokens = int(usage.get("input_tokens") or 0)
                output_tokens = int(usage.get("output_tokens") or 0)
            elif event == "content_block_delta":
                delta = parse_json_chunk(endpoint, sse.data).get("delta")
                if not isinstance(delta, dict):
                    raise malformed(endpoint)
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield delta["text"]
            elif event == "message_delta":
                chunk = parse_json_chunk(endpoint, sse.data)
                stop_reason = (chunk.get("delta") or {}).get("stop_reason") or stop_reason
                # output_tokens here is cumulative: the last one is the total.
                output_tokens = int((chunk.get("usage") or {}).get("output_tokens") or output_tokens)
            elif event == "message_stop":
                finished = True
                await read_to_end(events)  # so the connection serves the next request
                break
            # content_block_start, content_block_stop and unknown events carry nothing we need.
    if not finished:
        raise ProviderError(f"{endpoint.kind} ended the stream before the reply finished", code="truncated")
    yield StreamEnd(stop_reason or "end_turn", input_tokens=input_tokens, output_tokens=output_tokens)
