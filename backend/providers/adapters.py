"""Dispatch a stream to the adapter for the endpoint's wire protocol."""

from __future__ import annotations

from collections.abc import Callable

from backend.kb import answerer as kb_answerer
from backend.providers import anthropic, chat_completions, gemini, ollama
from backend.providers.base import ChatRequest, Endpoint, ProviderStream

ADAPTERS: dict[str, Callable[[Endpoint, ChatRequest], ProviderStream]] = {
    "chat_completions": chat_completions.stream,
    "anthropic": anthropic.stream,
    "gemini": gemini.stream,
    "ollama": ollama.stream,
    "kb": kb_answerer.stream,
}


def stream_chat(endpoint: Endpoint, request: ChatRequest) -> ProviderStream:
    return ADAPTERS[endpoint.protocol](endpoint, request)
