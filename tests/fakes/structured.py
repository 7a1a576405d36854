"""Each provider's exact non-streaming structured-output answer, as the fake server writes it."""

from __future__ import annotations

import json

from tests.fakes.server import Recorded, Reply


def _json(data: dict, status: int = 200) -> Reply:
    return Reply(status=status, pieces=[json.dumps(data).encode()], content_type="application/json")


def openai_json(content: str, *, usage: tuple[int, int] = (120, 40), model: str = "gpt-4o-mini") -> Reply:
    """A Chat Completions answer whose message content is the model's JSON text."""
    return _json(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1764000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }
    )


def anthropic_tool(tool_input: object, *, name: str = "ticket_summary", usage: tuple[int, int] = (130, 45)) -> Reply:
    """An Anthropic Messages answer with the forced tool call carrying the JSON as its input."""
    return _json(
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "tool_use", "id": "toolu_fake", "name": name, "input": tool_input}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }
    )


def gemini_json(text: str, *, usage: tuple[int, int] = (110, 35), thoughts: int = 0) -> Reply:
    """A Gemini generateContent answer whose single text part is the JSON."""
    metadata = {
        "promptTokenCount": usage[0],
        "candidatesTokenCount": usage[1],
        "totalTokenCount": sum(usage) + thoughts,
    }
    if thoughts:
        metadata["thoughtsTokenCount"] = thoughts
    return _json(
        {
            "candidates": [
                {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": metadata,
            "modelVersion": "gemini-2.5-flash-lite",
        }
    )


def ollama_json(content: str, *, usage: tuple[int, int] | None = (100, 30)) -> Reply:
    """An Ollama /api/chat answer with stream false; prompt_eval_count may be missing."""
    data = {
        "model": "llama3.2",
        "created_at": "2026-11-25T18:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
    }
    if usage:
        data.update(prompt_eval_count=usage[0], eval_count=usage[1])
    return _json(data)


def anthropic_error(status: int, type_: str, message: str) -> Reply:
    return _json({"type": "error", "error": {"type": type_, "message": message}}, status)


def gemini_error(status: int, code_status: str, message: str) -> Reply:
    return _json({"error": {"code": status, "message": message, "status": code_status}}, status)


def ollama_error(status: int, message: str) -> Reply:
    return _json({"error": message}, status)


def openai_structured_error(status: int, message: str, type_: str, param: str | None = None) -> Reply:
    return _json({"error": {"message": message, "type": type_, "param": param, "code": None}}, status)


def refuse_unexpected(request: Recorded) -> Reply:
    """Default for structured fakes: every answer must be scripted."""
    return _json({"error": {"message": f"unscripted request {request.path}", "type": "server_error"}}, 500)
