"""The Chat Completions wire protocol: OpenAI, Mistral, DeepSeek, LM Studio and other compatibles."""

from __future__ import annotations

from httpx_sse import EventSource

from backend.providers.base import ChatRequest, Endpoint, ProviderError, ProviderStream, StreamEnd
from backend.providers.http import open_stream, parse_json_chunk, read_to_end, redact, with_phase_timeouts


def build_body(endpoint: Endpoint, request: ChatRequest) -> dict:
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages += [{"role": m.role, "content": m.content} for m in request.messages]
    return {
        "model": endpoint.model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": request.max_tokens,
        "messages": messages,
    }


async def stream(endpoint: Endpoint, request: ChatRequest) -> ProviderStream:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    url = endpoint.base_url.rstrip("/") + "/chat/completions"
    finish_reason = ""
    usage: dict | None = None
    body = build_body(endpoint, request)
    async with open_stream(endpoint, url, headers=headers, body=body, on_sent=request.on_sent) as (response, left):
        events = with_phase_timeouts(EventSource(response).aiter_sse(), endpoint, left)
        async for sse in events:
            if sse.data == "[DONE]":
                await read_to_end(events)  # so the connection serves the next request
                break
            chunk = parse_json_chunk(endpoint, sse.data)
            if "error" in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                raise ProviderError(
                    redact(f"{endpoint.kind} stream error: {error.get('message', '')}", endpoint),
                    code=str(error.get("code") or error.get("type") or ""),
                )
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
    if not finish_reason and usage is None:
        raise ProviderError(f"{endpoint.kind} ended the stream before the reply finished", code="truncated")
    if usage:
        yield StreamEnd(
            finish_reason or "stop",
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )
    else:
        yield StreamEnd(finish_reason, usage_estimated=True)
