"""The one interface every provider adapter implements: a stream of text, then a final record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """Everything needed to call one provider; the key is kept out of repr so it never reaches logs."""

    kind: str
    protocol: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    connect_timeout: float = 5.0
    first_byte_timeout: float = 30.0
    idle_timeout: float = 30.0


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "user" or "assistant"; agents' words are sent as "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    system: str
    messages: list[ChatMessage]
    max_tokens: int
    # Awaited each time the request has been written to a provider, while it has not answered yet: the chat
    # consumer sends the reply's `start` frame then, so that frame's work does not delay the request.
    on_sent: Callable[[], Awaitable[None]] | None = field(default=None, compare=False, repr=False)


@dataclass
class StreamEnd:
    """The final record of a stream: why it finished and what the provider billed."""

    finish_reason: str
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    sources: list[dict] | None = None  # [{"title","url"}] for answerers that choose their own sources (kb)


class ProviderError(Exception):
    """An upstream failure, described without secrets, for logs and for the retry decision."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


ProviderStream = AsyncIterator[str | StreamEnd]


def estimate_tokens(text: str) -> int:
    """Estimate tokens when a provider reports none: about four characters a token in English."""
    return max(1, (len(text) + 3) // 4) if text else 0


def alternating_turns(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Merge consecutive turns of one role and drop leading assistant turns, for APIs that demand it."""
    turns: list[ChatMessage] = []
    for message in messages:
        if not turns and message.role != "user":
            continue  # Anthropic and Gemini want the first turn to be the user's
        if turns and turns[-1].role == message.role:
            turns[-1] = ChatMessage(message.role, turns[-1].content + "\n\n" + message.content)
        else:
            turns.append(message)
    return turns
