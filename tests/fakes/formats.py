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
    return openai_echo(request)


def lmstudio_default(request: Recorded) -> Reply:
    """Answer like LM Studio's local server: no key needed."""
    return openai_echo(request)


def openai_echo(request: Recorded) -> Reply:
    body = request.json()
    last = body["messages"][-1]["content"]
    words = f"You said: {last}".split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return openai_reply(
        pieces, model=body.get("model", "gpt-4o-mini"), usage=(len(str(body["messages"])) // 4, len(pieces))
    )


def split_words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def mistral_default(request: Recorded) -> Reply:
    """Answer like Mistral: 401 without a bearer key, else echo with usage on the finish chunk, no keep-alives."""
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return openai_error(401, "Unauthorized", "invalid_request_error", "invalid_api_key")
    body = request.json()
    pieces = split_words(f"You said: {body['messages'][-1]['content']}")
    usage = (len(str(body["messages"])) // 4, len(pieces))
    return openai_reply(pieces, model=body["model"], usage=usage, usage_on_finish=True, keepalive=False)


# -- Anthropic Messages ----------------------------------------------------------------------------------
def anthropic_stream(
    pieces: list[str],
    *,
    model: str = "claude-haiku-4-5",
    usage: tuple[int, int] = (12, 7),
    stop_reason: str = "end_turn",
) -> list[bytes]:
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": 1},
    }
    out = [
        sse({"type": "message_start", "message": message}, "message_start"),
        sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        out.append(sse(delta, "content_block_delta"))
    out.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    out.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage[1]},
            },
            "message_delta",
        )
    )
    out.append(sse({"type": "message_stop"}, "message_stop"))
    return out


def anthropic_error_body(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message}}


def anthropic_error(status: int, type_: str, message: str, headers: dict | None = None) -> Reply:
    body = json.dumps(anthropic_error_body(type_, message)).encode()
    return Reply(status=status, pieces=[body], content_type="application/json", headers=headers or {})


def anthropic_reply(pieces: list[str], **kwargs) -> Reply:
    delay = kwargs.pop("delay", 0.0)
    return Reply(pieces=anthropic_stream(pieces, **kwargs), delay=delay)


def anthropic_default(request: Recorded) -> Reply:
    """Answer like the real API: 401 without x-api-key, 400 without anthropic-version, else echo."""
    if not request.headers.get("x-api-key"):
        return anthropic_error(401, "authentication_error", "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return anthropic_error(400, "invalid_request_error", "anthropic-version header is required")
    body = request.json()
    messages = body["messages"]
    if not messages or messages[0]["role"] != "user" or "max_tokens" not in body:
        return anthropic_error(400, "invalid_request_error", "messages: first message must use the user role")
    if any(a["role"] == b["role"] for a, b in zip(messages, messages[1:], strict=False)):
        return anthropic_error(400, "invalid_request_error", "messages: roles must alternate")
    pieces = split_words(f"You said: {messages[-1]['content']}")
    return anthropic_reply(pieces, model=body["model"], usage=(len(str(body)) // 4, len(pieces)))


# -- Google Gemini -----------------------------------------------------------------------------------------
def gemini_stream(
    pieces: list[str],
    *,
    usage: tuple[int, int] = (12, 7),
    thoughts: int | None = None,
    finish: str = "STOP",
    model: str = "gemini-2.5-flash",
) -> list[bytes]:
    out = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        # Usage arrives on every chunk and grows; only the last one is the total.
        output = usage[1] if last else index + 1
        metadata = {"promptTokenCount": usage[0], "candidatesTokenCount": output}
        if thoughts is not None:
            metadata["thoughtsTokenCount"] = thoughts
        metadata["totalTokenCount"] = usage[0] + output + (thoughts or 0)
        candidate: dict = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = finish
        out.append(sse({"candidates": [candidate], "usageMetadata": metadata, "modelVersion": model}))
    return out


def gemini_error(status: int, grpc_status: str, message: str, details: list | None = None) -> Reply:
    body = {"error": {"code": status, "message": message, "status": grpc_status}}
    if details is not None:
        body["error"]["details"] = details
    return Reply(status=status, pieces=[json.dumps(body).encode()], content_type="application/json")


def gemini_bad_key() -> Reply:
    return gemini_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    )


def gemini_rate_limited(retry_delay: str) -> Reply:
    return gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}],
    )


def gemini_reply(pieces: list[str], **kwargs) -> Reply:
    delay = kwargs.pop("delay", 0.0)
    return Reply(pieces=gemini_stream(pieces, **kwargs), delay=delay)


def gemini_default(request: Recorded) -> Reply:
    """Answer like the real API: 400 API_KEY_INVALID without a key, 404 off the stream path, else echo."""
    if not request.headers.get("x-goog-api-key"):
        return gemini_bad_key()
    if not request.path.endswith(":streamGenerateContent?alt=sse"):
        return gemini_error(404, "NOT_FOUND", f"{request.path} was not found")
    body = request.json()
    contents = body["contents"]
    if any(c["role"] not in ("user", "model") for c in contents):
        return gemini_error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
    last = contents[-1]["parts"][0]["text"]
    pieces = split_words(f"You said: {last}")
    return gemini_reply(pieces, usage=(len(str(body)) // 4, len(pieces)))


# -- Ollama native /api/chat ----------------------------------------------------------------------------
def ndjson(obj: dict) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def ollama_stream(
    pieces: list[str], *, model: str = "llama3.2", usage: tuple[int | None, int] = (12, 7), done_reason: str = "stop"
) -> list[bytes]:
    stamp = "2026-11-25T18:00:00Z"
    out = [
        ndjson({"model": model, "created_at": stamp, "message": {"role": "assistant", "content": p}, "done": False})
        for p in pieces
    ]
    final: dict = {
        "model": model,
        "created_at": stamp,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": done_reason,
        "total_duration": 1_000_000,
        "load_duration": 1000,
        "eval_count": usage[1],
        "eval_duration": 500_000,
    }
    if usage[0] is not None:  # left out when the prompt came from Ollama's cache
        final["prompt_eval_count"] = usage[0]
    out.append(ndjson(final))
    return out


def ollama_error(status: int, message: str) -> Reply:
    return Reply(status=status, pieces=[json.dumps({"error": message}).encode()], content_type="application/json")


def ollama_reply(pieces: list[str], **kwargs) -> Reply:
    delay = kwargs.pop("delay", 0.0)
    return Reply(pieces=ollama_stream(pieces, **kwargs), delay=delay, content_type="application/x-ndjson")


def ollama_default(request: Recorded) -> Reply:
    """Answer like a local Ollama: 404 for a path it lacks, else echo the last message as NDJSON."""
    if request.path != "/api/chat":
        return ollama_error(404, "404 page not found")
    body = request.json()
    pieces = split_words(f"You said: {body['messages'][-1]['content']}")
    return ollama_reply(pieces, model=body["model"], usage=(len(str(body)) // 4, len(pieces)))
