"""Structured JSON output, non-streaming, in each wire protocol's own JSON mode (shared/PROVIDERS.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from backend.providers.base import ChatMessage, Endpoint, ProviderError
from backend.providers.http import raise_for_status, transport_error

SCHEMA_NAME = "result"


@dataclass(frozen=True)
class StructuredRequest:
    system: str
    messages: list[ChatMessage]
    schema: dict
    max_tokens: int = 1024
    schema_name: str = SCHEMA_NAME


@dataclass(frozen=True)
class StructuredReply:
    """The JSON text the model produced (not yet validated) and what the call was billed."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0


def _timeout(endpoint: Endpoint) -> httpx.Timeout:
    # Non-streaming: the whole answer must arrive within the first-byte budget.
    return httpx.Timeout(
        connect=endpoint.connect_timeout, read=endpoint.first_byte_timeout, write=30.0, pool=endpoint.connect_timeout
    )


async def _post(endpoint: Endpoint, url: str, body: dict, headers: dict[str, str]) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    try:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=_timeout(endpoint)) as client:
            response = await client.post(url, json=body, headers=headers)
            await raise_for_status(endpoint, response)
    except httpx.HTTPError as error:
        raise transport_error(endpoint, error) from None
    try:
        data = response.json()
    except ValueError:
        raise ProviderError(f"{endpoint.kind} sent a body that is not JSON", code="malformed") from None
    if not isinstance(data, dict):
        raise ProviderError(f"{endpoint.kind} sent an unexpected body", code="malformed")
    return data


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


# -- Chat Completions --------------------------------------------------------------------------------------
def chat_completions_body(endpoint: Endpoint, request: StructuredRequest, *, json_schema: bool = True) -> dict:
    system = request.system
    if json_schema:
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": request.schema_name, "strict": True, "schema": request.schema},
        }
    else:
        # JSON mode only promises some JSON object, so the schema goes into the instructions.
        response_format = {"type": "json_object"}
        system = f"{system}\n\nAnswer with one JSON object matching this JSON Schema:\n{json.dumps(request.schema)}"
    messages = [{"role": "system", "content": system}] + [
        {"role": m.role, "content": m.content} for m in request.messages
    ]
    return {
        "model": endpoint.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "response_format": response_format,
    }


def _schema_unsupported(error: ProviderError) -> bool:
    """Tell whether a 400 says the provider cannot do json_schema (DeepSeek and older models can only json_object)."""
    text = error.message.lower()
    return error.status in (400, 422) and ("response_format" in text or "json_schema" in text)


async def chat_completions(endpoint: Endpoint, request: StructuredRequest) -> StructuredReply:
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    url = endpoint.base_url.rstrip("/") + "/chat/completions"
    try:
        data = await _post(endpoint, url, chat_completions_body(endpoint, request), headers)
    except ProviderError as error:
        if not _schema_unsupported(error):
            raise
        data = await _post(endpoint, url, chat_completions_body(endpoint, request, json_schema=False), headers)
    choices = data.get("choices") or []
    message = (choices[0].get("message") or {}) if choices and isinstance(choices[0], dict) else {}
    if message.get("refusal"):
        raise ProviderError(f"{endpoint.kind} refused: {str(message['refusal'])[:200]}", code="refusal")
    content = message.get("content")
    if not isinstance(content, str):
        raise ProviderError(f"{endpoint.kind} sent no content", code="malformed")
    usage = data.get("usage") or {}
    return StructuredReply(content, _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))


# -- Anthropic Messages: a forced tool whose input is the JSON ------------------------------------------------
def anthropic_body(endpoint: Endpoint, request: StructuredRequest) -> dict:
    return {
        "model": endpoint.model,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "tools": [{"name": request.schema_name, "description": "Record the result.", "input_schema": request.schema}],
        "tool_choice": {"type": "tool", "name": request.schema_name},
    }


async def anthropic(endpoint: Endpoint, request: StructuredRequest) -> StructuredReply:
    headers = {"x-api-key": endpoint.api_key, "anthropic-version": "2023-06-01"}
    url = endpoint.base_url.rstrip("/") + "/v1/messages"
    data = await _post(endpoint, url, anthropic_body(endpoint, request), headers)
    if data.get("type") == "error":
        error = data.get("error") or {}
        raise ProviderError(f"{endpoint.kind} error: {error.get('message', '')}", code=str(error.get("type", "")))
    tool_input = None
    for block in data.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("name") == request.schema_name:
            tool_input = block.get("input")
            break
    if tool_input is None:
        raise ProviderError(f"{endpoint.kind} did not call the {request.schema_name} tool", code="malformed")
    usage = data.get("usage") or {}
    return StructuredReply(json.dumps(tool_input), _int(usage.get("input_tokens")), _int(usage.get("output_tokens")))


# -- Google Gemini -------------------------------------------------------------------------------------------
def gemini_body(endpoint: Endpoint, request: StructuredRequest) -> dict:
    return {
        "systemInstruction": {"parts": [{"text": request.system}]},
        "contents": [
            {"role": "user" if m.role == "user" else "model", "parts": [{"text": m.content}]} for m in request.messages
        ],
        "generationConfig": {
            "maxOutputTokens": request.max_tokens,
            "responseMimeType": "application/json",
            "responseJsonSchema": request.schema,
        },
    }


async def gemini(endpoint: Endpoint, request: StructuredRequest) -> StructuredReply:
    headers = {"x-goog-api-key": endpoint.api_key}
    url = f"{endpoint.base_url.rstrip('/')}/models/{endpoint.model}:generateContent"
    data = await _post(endpoint, url, gemini_body(endpoint, request), headers)
    candidates = data.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
    if not text:
        reason = candidate.get("finishReason") or (data.get("promptFeedback") or {}).get("blockReason") or "empty"
        raise ProviderError(f"{endpoint.kind} sent no text ({reason})", code="malformed")
    usage = data.get("usageMetadata") or {}
    # Thinking tokens are billed as output.
    output = _int(usage.get("candidatesTokenCount")) + _int(usage.get("thoughtsTokenCount"))
    return StructuredReply(text, _int(usage.get("promptTokenCount")), output)


# -- Ollama native -------------------------------------------------------------------------------------------
def ollama_body(endpoint: Endpoint, request: StructuredRequest) -> dict:
    messages = [{"role": "system", "content": request.system}] + [
        {"role": m.role, "content": m.content} for m in request.messages
    ]
    return {
        "model": endpoint.model,
        "messages": messages,
        "stream": False,
        "format": request.schema,
        "options": {"num_predict": request.max_tokens},
    }


async def ollama(endpoint: Endpoint, request: StructuredRequest) -> StructuredReply:
    url = endpoint.base_url.rstrip("/") + "/api/chat"
    data = await _post(endpoint, url, ollama_body(endpoint, request), {})
    if "error" in data:
        raise ProviderError(f"{endpoint.kind} error: {str(data['error'])[:200]}", code="error")
    content = (data.get("message") or {}).get("content")
    if not isinstance(content, str):
        raise ProviderError(f"{endpoint.kind} sent no content", code="malformed")
    return StructuredReply(content, _int(data.get("prompt_eval_count")), _int(data.get("eval_count")))


STRUCTURED = {"chat_completions": chat_completions, "anthropic": anthropic, "gemini": gemini, "ollama": ollama}


async def complete_json(endpoint: Endpoint, request: StructuredRequest) -> StructuredReply:
    """Ask the endpoint for one JSON answer shaped by request.schema, in its protocol's JSON mode."""
    try:
        call = STRUCTURED[endpoint.protocol]
    except KeyError:
        raise ProviderError(f"{endpoint.kind} has no structured output support", code="unsupported") from None
    return await call(endpoint, request)
