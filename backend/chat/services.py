"""Database work for the chat consumer, as plain functions that the tests call directly too."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Case, F, OuterRef, Subquery, Value, When
from django.utils import timezone

from backend.chat.models import Conversation, Message, Visitor, hash_token, new_visitor_token
from backend.providers.base import ChatMessage, ChatRequest, Endpoint, StreamEnd, estimate_tokens
from backend.providers.models import Price, ProviderConfig, endpoints_for
from backend.providers.presets import PRESETS
from backend.providers.pricing import FREE_KINDS, ZERO
from backend.sites.models import Site


@dataclass
class Session:
    visitor: Visitor
    token: str
    conversation: Conversation
    history: list[dict]


def find_site(key: str) -> Site | None:
    return Site.objects.filter(key=key).first()


def open_session(site: Site, token: object) -> Session:
    """Resume the visitor's open conversation, or start a new visitor when the token is not theirs."""
    visitor = None
    if isinstance(token, str) and 0 < len(token) <= 200:
        visitor = Visitor.objects.filter(site=site, token_hash=hash_token(token)).first()
    if visitor is None:
        token = new_visitor_token()
        visitor = Visitor.objects.create(site=site, token_hash=hash_token(token))
    conversation = (
        Conversation.objects.filter(visitor=visitor)
        .exclude(state=Conversation.State.CLOSED)
        .order_by("-last_activity")
        .first()
    )
    if conversation is None:
        conversation = Conversation.objects.create(site=site, visitor=visitor)
        history: list[dict] = []
    else:
        recent = conversation.messages.order_by("-created")[: settings.CHAT_READY_HISTORY_LIMIT]
        history = [m.as_frame() | ({"sources": m.sources} if m.sources else {}) for m in reversed(list(recent))]
    return Session(visitor=visitor, token=token, conversation=conversation, history=history)


def start_conversation(visitor: Visitor) -> Conversation:
    """Open a new conversation for the visitor; their earlier ones stay as they are."""
    return Conversation.objects.create(site=visitor.site, visitor=visitor)


def record_visitor_message(
    conversation: Conversation, client_id: str, text: str
) -> tuple[Message, Message | None, bool]:
    """Store the visitor's message once per client id; return (message, its reply if any, created)."""
    try:
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, text=text, client_id=client_id
        )
        return message, None, True
    except IntegrityError:
        message = Message.objects.get(conversation=conversation, client_id=client_id)
        reply = message.replies.filter(role=Message.Role.ASSISTANT).order_by("created").first()
        return message, reply, False


@dataclass
class PreparedReply:
    message: Message
    created: bool  # False for a resent message
    reply: Message | None  # the reply already stored: replay it
    endpoints: list[tuple[Endpoint, tuple[Decimal, Decimal] | None]]
    turns: list[ChatMessage]


def prepare_reply(site: Site, conversation: Conversation, client_id: str, text: str) -> PreparedReply:
    """Store the visitor's message once, then read what the provider request needs (3 queries)."""
    message, reply, created = record_visitor_message(conversation, client_id, text)
    if reply is not None:
        return PreparedReply(message, created, reply, [], [])
    endpoints = priced_chat_endpoints(site)
    return PreparedReply(message, created, None, endpoints, prompt_turns(conversation) if endpoints else [])


def chat_endpoints(site: Site) -> list[Endpoint]:
    return endpoints_for(site, ProviderConfig.Purpose.CHAT)


def priced_chat_endpoints(site: Site) -> list[tuple[Endpoint, tuple[Decimal, Decimal] | None]]:
    """Return the site's chat endpoints with each one's price per million tokens, in one query.

    The price is read with the endpoint, before the call, so that storing the reply afterwards needs no
    lookup of its own (docs/benchmarks.md: queries per reply).
    """
    effective_model = Case(
        *[When(model="", kind=kind, then=Value(preset.default_model)) for kind, preset in PRESETS.items()],
        default=F("model"),
    )
    price = Price.objects.filter(kind=OuterRef("kind"), model=OuterRef("price_model"))
    configs = (
        ProviderConfig.objects.filter(site=site, purpose=ProviderConfig.Purpose.CHAT, enabled=True)
        .select_related("site")  # a kb endpoint is addressed by its site
        .annotate(price_model=effective_model)
        .annotate(
            input_price=Subquery(price.values("input_per_million")[:1]),
            output_price=Subquery(price.values("output_per_million")[:1]),
        )
        .order_by("position", "id")
    )
    priced = []
    for config in configs:
        if config.kind in FREE_KINDS:
            prices: tuple[Decimal, Decimal] | None = (ZERO, ZERO)
        elif config.input_price is None or config.output_price is None:
            prices = None
        else:
            prices = (config.input_price, config.output_price)
        priced.append((config.endpoint(), prices))
    return priced


def prompt_turns(conversation: Conversation, budget_tokens: int | None = None) -> list[ChatMessage]:
    """Return the conversation's recent turns, newest kept first, within the token budget."""
    budget = budget_tokens if budget_tokens is not None else settings.CHAT_HISTORY_TOKEN_BUDGET
    recent = (
        conversation.messages.filter(role__in=[Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT])
        .exclude(text="")
        .order_by("-created")
        .values_list("role", "text")[: settings.CHAT_HISTORY_MAX_MESSAGES]
    )
    turns: list[ChatMessage] = []
    used = 0
    for role, text in recent:
        cost = estimate_tokens(text)
        if turns and used + cost > budget:
            break
        used += cost
        turns.append(ChatMessage("user" if role == Message.Role.USER else "assistant", text))
    turns.reverse()
    return turns


def save_reply(
    *,
    reply_id: uuid.UUID,
    conversation: Conversation,
    reply_to: Message,
    text: str,
    status: str,
    created: dt.datetime,
    provider: str = "",
    model: str = "",
    input_tokens: int = 0,
    output_tokens: int = 0,
    usage_estimated: bool = False,
    cost: Decimal = ZERO,
    attempts: int = 1,
    latency_ms: int | None = None,
    first_token_ms: int | None = None,
    error: str = "",
    sources: list[dict] | None = None,
) -> Message:
    """Write a finished reply in one insert, and mark the conversation active."""
    message = Message.objects.create(
        id=reply_id,
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=reply_to,
        text=text,
        status=status,
        created=created,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        usage_estimated=usage_estimated,
        cost=cost,
        attempts=attempts,
        latency_ms=latency_ms,
        first_token_ms=first_token_ms,
        error=error[:500],
        sources=sources or [],
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_activity=timezone.now())
    return message


def estimate_prompt_tokens(system: str, turns: list[ChatMessage]) -> int:
    return estimate_tokens(system) + sum(estimate_tokens(t.content) + 4 for t in turns)


def reply_usage(request: ChatRequest, text: str, end: StreamEnd | None) -> tuple[int, int, bool]:
    """Return (input tokens, output tokens, estimated): the provider's counts, estimates where it sent none."""
    if end is None:
        return estimate_prompt_tokens(request.system, request.messages), estimate_tokens(text), True
    if not end.usage_estimated:
        return end.input_tokens, end.output_tokens, False
    input_tokens = end.input_tokens or estimate_prompt_tokens(request.system, request.messages)
    return input_tokens, end.output_tokens or estimate_tokens(text), True
