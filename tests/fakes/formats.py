"""Each provider's exact streaming wire format, as the fake server writes it (../shared/PROVIDERS.md)."""

from __future__ import annotations

import json

from tests.fakes.server import Recorded, Reply


def sse(data: dict | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# -- OpenAI Chat Completions (also Mistral, DeepSeek, LM Studio) ----------------------------------------
def openai_stream(
    pieces: list[str],
    *,
    model: str = "gpt-4o-mini",
    finish: str = "stop",
    usage: tuple[int, int] | None = (12, 7),
    usage_on_finish: bool = False,  # Mistral's style
    keepalive: bool = True,
) -> list[bytes]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1764000000, "model": model}
    out = [b": keep-alive\n\n"] if keepalive else []
    out.append(
        sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    )
    for piece in pieces:
        out.append(sse(base | {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
    usage_obj = (
        {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)} if usage else None
    )
    final = base | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    if usage_obj and usage_on_finish:
        final["usage"] = usage_obj
    out.append(sse(final))
    if usage_obj and not usage_on_finish:
        out.append(sse(base | {"choices": [], "usage": usage_obj}))
    out.append(sse("[DONE]"))
    return out


def openai_error(status: int, message: str, type_: str, code: str | None = None, headers: dict | None = None) -> Reply:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    return Reply(status=status, pieces=[body], content_type="application/json", headers=headers or {})


def openai_reply(pieces: list[str], **kwargs) -> Reply:
    delay = kwargs.pop("delay", 0.0)
    return Reply(pieces=openai_stream(pieces, **kwargs), delay=delay)


def openai_default(request: Recorded) -> Reply:
    """Answer like the real API: 401 without a bearer key, else echo the last user message."""
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return openai_error(401, "You didn't provide an API key.", "invalid_request_error", "invalid_api_key")
    body = request.json()
    last = body["messages"][-1]["content"]
    words = f"You said: {last}".split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return openai_reply(
        pieces, model=body.get("model", "gpt-4o-mini"), usage=(len(str(body["messages"])) // 4, len(pieces))
    )
