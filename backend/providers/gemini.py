"""The Google Gemini wire protocol: streamGenerateContent as SSE, systemInstruction, role "model"."""

from __future__ import annotations

from urllib.parse import quote

from httpx_sse import EventSource

from backend.providers.base import ChatRequest, Endpoint, ProviderError, ProviderStream, StreamEnd, alternating_turns
from backend.providers.http import malformed, open_stream, parse_json_chunk, redact, with_phase_timeouts

ROLES = {"user": "user", "assistant": "model"}


def build_body(endpoint: Endpoint, request: ChatRequest) -> dict:
    body: dict = {
        "contents": [
            {"role": ROLES[m.role], "parts": [{"text": m.content}]} for m in alternating_turns(request.messages)
        ],
        "generationConfig": {"maxOutputTokens": request.max_tokens},
    }
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    return body


async def stream(endpoint: Endpoint, request: ChatRequest) -> ProviderStream:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", "x-goog-api-key": endpoint.api_key}
    model = endpoint.model.removeprefix("models/")  # Google's docs name models both ways
    url = f"{endpoint.base_url.rstrip('/')}/models/{quote(model, safe='')}:streamGenerateContent?alt=sse"
    usage: dict = {}
    finish_reason = ""
    body = build_body(endpoint, request)
    async with open_stream(endpoint, url, headers=headers, body=body, on_sent=request.on_sent) as (response, left):
        async for sse in with_phase_timeouts(EventSource(response).aiter_sse(), endpoint, left):
            chunk = parse_json_chunk(endpoint, sse.data)
            if "error" in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                raise ProviderError(
                    redact(f"{endpoint.kind} stream error: {error.get('message', '')}", endpoint),
                    code=str(error.get("status") or error.get("code") or ""),
                    retryable=error.get("status") in ("UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"),
                )
            # Usage comes on every chunk, growing; the last one is the bill.
            if isinstance(chunk.get("usageMetadata"), dict):
                usage = chunk["usageMetadata"]
            candidates = chunk.get("candidates") or []
            if not isinstance(candidates, list):
                raise malformed(endpoint)
            for candidate in candidates[:1]:
                for part in (candidate.get("content") or {}).get("parts") or []:
                    # Thought summaries (thought: true) are the model's notes, not the reply.
                    if part.get("text") and not part.get("thought"):
                        yield part["text"]
                if candidate.get("finishReason"):
                    finish_reason = candidate["finishReason"]
            if blocked := (chunk.get("promptFeedback") or {}).get("blockReason"):
                raise ProviderError(f"{endpoint.kind} refused the prompt: {blocked}", code="blocked")
    if not finish_reason:
        raise ProviderError(f"{endpoint.kind} ended the stream before the reply finished", code="truncated")
    if not usage:
        yield StreamEnd(finish_reason, usage_estimated=True)
        return
    output = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
    yield StreamEnd(finish_reason, input_tokens=int(usage.get("promptTokenCount") or 0), output_tokens=output)
