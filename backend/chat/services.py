"""Database work for the chat consumer, as plain functions that the tests call directly too."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection
from django.db.models import Case, F, OuterRef, Subquery, Value, When
from django.utils import timezone

from backend.agents import services as agent_services
from backend.chat.config import ReplyConfig, load_reply_config
from backend.chat.models import SILENT_STATES, Conversation, Message, Visitor, hash_token, new_visitor_token
from backend.kb.grounding import Grounding
from backend.kb.models import Passage
from backend.providers.base import ChatMessage, ChatRequest, Endpoint, StreamEnd, estimate_tokens
from backend.providers.models import Price, ProviderConfig, endpoints_for
from backend.providers.presets import PRESETS
from backend.providers.pricing import FREE_KINDS, ZERO
from backend.quotas import services as quota_services
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
    reply: Message | None = None  # the reply already stored: replay it
    state: str = Conversation.State.BOT  # the conversation's state when the message arrived
    reopened: Conversation | None = None  # a closed conversation this message gave back to the bot
    config: ReplyConfig | None = None
    turns: list[ChatMessage] = field(default_factory=list)
    has_articles: bool = False  # the site has help passages: ground the prompt before reserving
    request: ChatRequest | None = None
    reservation: Any = None  # a quota Reservation or Refusal, when made in the same trip

    @property
    def silent(self) -> bool:
        """A person has the conversation (or is about to): the bot must not answer."""
        return self.state in SILENT_STATES


def prepare_reply(
    conversation: Conversation, client_id: str, text: str, known: ReplyConfig | None = None
) -> PreparedReply:
    """Everything before the provider call, in one trip to the database (2 queries when nothing changed).

    Stores the visitor's message once (the duplicate check), reads the history with the conversation's
    state, whether the site has help passages and its configuration stamp, re-reads the configuration
    only when the stamp differs from `known`, and reserves the reply's quota when no grounding must come
    first. The rest (telling agents, the usage ledger) happens beside or after the call.
    """
    message, reply, created = record_visitor_message(conversation, client_id, text)
    if reply is not None:
        return PreparedReply(message, created, reply)
    state, has_articles, stamp, recent = read_history(conversation)
    config = known if known is not None and known.stamp == stamp else load_reply_config(conversation.site_id)
    prepared = PreparedReply(message, created, state=state, config=config, has_articles=has_articles)
    if state == Conversation.State.CLOSED:
        prepared.reopened = agent_services.reopen(conversation.pk)
    elif prepared.silent:
        agent_services.touch(conversation.pk)
        return prepared
    if not config.endpoints:
        return prepared
    prepared.turns = within_budget(recent)[-config.quota.max_history_messages :]
    if not has_articles:
        prepared.request = reply_request(config.site, Grounding(), prepared.turns)
        prepared.reservation = quota_services.reserve_reply(
            config.site.pk, [e for e, _ in config.endpoints], prepared.request, [p for _, p in config.endpoints]
        )
    return prepared


def read_history(conversation: Conversation) -> tuple[str, bool, uuid.UUID, list[tuple[str, str]]]:
    """Return (state, site has passages, site's config stamp, recent turns newest first) in one query.

    The conversation's own values come along on every history row; there is always at least one row,
    since the visitor's message was stored just before. Written in SQL because it runs before every
    provider call: the ORM took about 1.9 ms to build and read it on the benchmark machine, this 0.5 ms.
    """
    conversation_id = Conversation._meta.pk.get_db_prep_value(conversation.pk, connection)
    roles = [Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT]
    with connection.cursor() as cursor:
        cursor.execute(HISTORY_SQL, [conversation_id, conversation.site_id, conversation.site_id, conversation_id, *roles,
                                     settings.CHAT_HISTORY_MAX_MESSAGES])  # fmt: skip
        rows = cursor.fetchall()
    _, _, state, has_articles, stamp = rows[0]
    return state, bool(has_articles), uuid.UUID(str(stamp)), [(role, text) for role, text, *_ in rows]


# Table names come from the models; every value is a parameter.
HISTORY_SQL = f"""
    SELECT m.role, m.text,
        (SELECT c.state FROM {Conversation._meta.db_table} c WHERE c.id = %s),
        EXISTS (SELECT 1 FROM {Passage._meta.db_table} p WHERE p.site_id = %s),
        (SELECT s.config_stamp FROM {Site._meta.db_table} s WHERE s.id = %s)
    FROM {Message._meta.db_table} m
    WHERE m.conversation_id = %s AND m.role IN (%s, %s, %s) AND m.text <> ''
    ORDER BY m.created DESC
    LIMIT %s
"""  # noqa: S608


def reply_request(site: Site, grounding: Grounding, turns: list[ChatMessage]) -> ChatRequest:
    return ChatRequest(system=grounding.system(site.system_prompt), messages=turns, max_tokens=site.max_reply_tokens)


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
    recent = (
        conversation.messages.filter(role__in=[Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT])
        .exclude(text="")
        .order_by("-created")
        .values_list("role", "text")[: settings.CHAT_HISTORY_MAX_MESSAGES]
    )
    return within_budget(list(recent), budget_tokens)


def within_budget(recent: list[tuple[str, str]], budget_tokens: int | None = None) -> list[ChatMessage]:
    """Keep the newest of (role, text) turns, given newest first, that fit the token budget; oldest first."""
    budget = budget_tokens if budget_tokens is not None else settings.CHAT_HISTORY_TOKEN_BUDGET
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
