"""Ollama's native wire protocol: POST /api/chat, one JSON object per line."""

from __future__ import annotations

from backend.providers.base import ChatRequest, Endpoint, ProviderError, ProviderStream, StreamEnd
from backend.providers.http import malformed, open_stream, parse_json_chunk, read_to_end, redact, with_phase_timeouts


def build_body(endpoint: Endpoint, request: ChatRequest) -> dict:
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages += [{"role": m.role, "content": m.content} for m in request.messages]
    return {
        "model": endpoint.model,
        "messages": messages,
        "stream": True,
        "options": {"num_predict": request.max_tokens},
    }


async def stream(endpoint: Endpoint, request: ChatRequest) -> ProviderStream:
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
    if endpoint.api_key:  # a local Ollama needs none; a proxy in front of it may
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    url = endpoint.base_url.rstrip("/") + "/api/chat"
    final: dict | None = None
    body = build_body(endpoint, request)
    async with open_stream(endpoint, url, headers=headers, body=body, on_sent=request.on_sent) as (response, left):
        lines = with_phase_timeouts(response.aiter_lines(), endpoint, left)
        async for line in lines:
            if not line.strip():
                continue
            chunk = parse_json_chunk(endpoint, line)
            if "error" in chunk:
                raise ProviderError(redact(f"{endpoint.kind} stream error: {chunk['error']}", endpoint), code="stream")
            message = chunk.get("message")
            if message is not None and not isinstance(message, dict):
                raise malformed(endpoint)
            if message and message.get("content"):
                yield message["content"]
            if chunk.get("done"):
                final = chunk
                await read_to_end(lines)  # so the connection serves the next request
                break
    if final is None:
        raise ProviderError(f"{endpoint.kind} ended the stream before the reply finished", code="truncated")
    # Ollama leaves out prompt_eval_count when the prompt came from its cache: count 0 and flag it.
    prompt_tokens = final.get("prompt_eval_count")
    yield StreamEnd(
        str(final.get("done_reason") or "stop"),
        input_tokens=int(prompt_tokens or 0),
        output_tokens=int(final.get("eval_count") or 0),
        usage_estimated=prompt_tokens is None or final.get("eval_count") is None,
    )
