"""Database work for the chat consumer, as plain functions that the tests call directly too."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, F, OuterRef, Subquery, Value, When
from django.utils import timezone

from backend.agents import services as agent_services
from backend.chat.config import ReplyConfig, reply_config
from backend.chat.models import SILENT_STATES, Conversation, Message, Visitor, hash_token, new_visitor_token
from backend.kb.grounding import Grounding
from backend.kb.models import Passage
from backend.ops.inserts import insert
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


def recent_turns(session: Session) -> list[tuple[str, str]] | None:
    """The turns read_history would give from the session's history, newest first; None when a person has it."""
    if session.conversation.state in SILENT_STATES:
        return None
    roles = (Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT)
    turns = [(frame["role"], frame["text"]) for frame in reversed(session.history) if frame["role"] in roles]
    return [turn for turn in turns if turn[1]][: settings.CHAT_HISTORY_MAX_MESSAGES]


def start_conversation(visitor: Visitor) -> Conversation:
    """Open a new conversation for the visitor; their earlier ones stay as they are."""
    return Conversation.objects.create(site=visitor.site, visitor=visitor)


@dataclass
class PreparedReply:
    message: Message
    created: bool  # False for a resent message
    saved: bool  # the message is in the database; when False, the consumer stores it beside the call
    reply: Message | None = None  # the reply already stored: replay it
    state: str = Conversation.State.BOT  # the conversation's state when the message arrived
    reopened: Conversation | None = None  # a closed conversation this message gave back to the bot
    config: ReplyConfig | None = None
    turns: list[ChatMessage] = field(default_factory=list)
    request: ChatRequest | None = None
    reservation: Any = None  # a quota Reservation or Refusal, when made in the same trip
    recent: list[tuple[str, str]] = field(default_factory=list)  # (role, text) of the history, newest first
    # The history the request was built on without reading it (prepare_guessed): the read beside the call
    # must give the same before anything of the reply reaches the visitor or the database.
    assumed: History | None = None

    @property
    def silent(self) -> bool:
        """A person has the conversation (or is about to): the bot must not answer."""
        return self.state in SILENT_STATES

    @property
    def starts_now(self) -> bool:
        """The provider call may start: the quota was reserved in the trip."""
        return self.reservation is not None and not isinstance(self.reservation, quota_services.Refusal)


def prepare_reply(
    conversation: Conversation,
    client_id: str,
    text: str,
    known: ReplyConfig | None = None,
    history: History | None = None,
    held: quota_services.Hold | None = None,
    guess: Guess | None = None,
) -> PreparedReply:
    """Everything the provider call needs, in one trip to the database: one query when nothing changed.

    It reads in one query (or takes from `history`, read_history's answer, read beside the reply claim in
    consumers.py) the history, the conversation's state, whether the site has help passages, its
    configuration stamp and whether this client id was stored before (the duplicate check); re-reads the
    configuration only when the stamp differs from `known`; and reserves the reply's quota when no
    grounding must come first. The visitor's message is stored here only when no call starts now;
    otherwise the consumer stores it beside the call.

    `held` is a hold made beside the read for `guess`, a guess of the request (guess_reservation): it becomes
    the reservation when it covers the request, and is given back otherwise.
    """
    try:
        history = history or read_history(conversation, client_id)
        prepared = prepare(conversation, client_id, text, known, history, held, guess)
    except BaseException:
        if held is not None:
            quota_services.release(held)
        raise
    if held is not None and prepared.request is None:  # no reservation was asked for: reserve_reply did not see it
        quota_services.release(held)
    if not prepared.saved and not prepared.starts_now:
        store_visitor_message(prepared.message)
        prepared.saved = True
    return prepared


def prepare(
    conversation: Conversation,
    client_id: str,
    text: str,
    known: ReplyConfig | None,
    history: History,
    held: quota_services.Hold | None,
    guess: Guess | None = None,
) -> PreparedReply:
    """prepare_reply's decisions once the history is read; it stores nothing of the visitor's message."""
    state, has_articles, stamp, existing, recent = history
    if existing is not None:
        message = Message.objects.get(pk=existing)
        reply = message.replies.filter(role=Message.Role.ASSISTANT).order_by("created").first()
        if reply is not None:
            return PreparedReply(message, created=False, saved=True, reply=reply)
    else:
        message = Message(conversation=conversation, role=Message.Role.USER, text=text, client_id=client_id)
        recent = [(message.role, message.text), *recent]
    config = known if known is not None and known.stamp == stamp else reply_config(conversation.site_id, stamp)
    prepared = PreparedReply(
        message, created=existing is None, saved=existing is not None, state=state, config=config, recent=recent
    )
    if state == Conversation.State.CLOSED:
        prepared.reopened = agent_services.reopen(conversation.pk)  # and the bot answers
    if prepared.silent:
        agent_services.touch(conversation.pk)
    elif config.endpoints:
        if guess is not None and config is known and guess.recent == recent:
            # The history read is the one guessed: the request is built, and a hold made for it covers it.
            prepared.turns, request = guess.turns, guess.request
            if held is not None and held is guess.attempt.hold and not has_articles:
                prepared.request, prepared.reservation = request, held
                return prepared
        else:
            prepared.turns, request = plain_request(config, recent)
        if not has_articles:  # with help passages, the consumer grounds the prompt first, then reserves
            prepared.request = request
            if held is not None and config is not known:
                # The hold was checked against the caps and prices read before the configuration changed.
                quota_services.release(held)
                held = None
            endpoints, prices = config.chain()
            prepared.reservation = quota_services.reserve_reply(
                config.site.pk, endpoints, request, prices, quota=config.quota, held=held
            )
    return prepared


def prepare_guessed(
    conversation: Conversation,
    client_id: str,
    text: str,
    config: ReplyConfig,
    guess: Guess,
    held: quota_services.Hold,
) -> PreparedReply:
    """The reply to a new message, built without reading anything: the guess's request (the turns the
    connection read last and the message), under the configuration `config` holds, with the hold made for
    it. Its `assumed` history is what the read beside the call must confirm (consumers.HistoryCheck)."""
    assumed: History = (Conversation.State.BOT, False, config.stamp, None, guess.recent[1:])
    prepared = prepare(conversation, client_id, text, config, assumed, held, guess)
    prepared.assumed = assumed
    return prepared


def plain_request(config: ReplyConfig, recent: list[tuple[str, str]]) -> tuple[list[ChatMessage], ChatRequest]:
    """The turns of a reply without help passages, from (role, text) newest first, and its request."""
    turns = within_budget(recent)[-config.quota.max_history_messages :]
    return turns, reply_request(config.site, Grounding(), turns)


@dataclass(frozen=True)
class Guess:
    """The request a message would make if the history read gives the turns the connection read last."""

    recent: list[tuple[str, str]]  # (role, text) newest first, the new message included
    turns: list[ChatMessage]
    request: ChatRequest
    attempt: Any  # a quota ledger Attempt for the reply claim's script to run (backend/ops/claims.py)


def guess_reservation(config: ReplyConfig, recent: list[tuple[str, str]], text: str) -> Guess | None:
    """The reservation for `text` as the next message after `recent` (the turns last read, newest first), or
    None when the ledger is not Redis's or the site has no provider. prepare_reply then checks the guess
    against the history read, and reuses its request when they match."""
    if not config.endpoints:
        return None
    recent = [(Message.Role.USER, text), *recent]
    turns, request = plain_request(config, recent)
    endpoints, prices = config.chain()
    attempt = quota_services.reservation_attempt(config.site.pk, endpoints, request, prices, quota=config.quota)
    return None if attempt is None else Guess(recent, turns, request, attempt)


def store_visitor_message(message: Message) -> None:
    insert(message)


# read_history's answer: (state, site has passages, config stamp, id of the message with this client id, turns).
History = tuple[str, bool, uuid.UUID, Any, list[tuple[str, str]]]


def read_history(conversation: Conversation, client_id: str) -> History:
    """Return (state, site has passages, site's config stamp, id of the message stored with this client id
    or None, recent turns newest first) in one query.

    The conversation's own values come along on every row, and the history is joined to it, so that a
    conversation without messages still gives one row. Written in SQL because it runs before every
    provider call: the ORM took about 1.9 ms to build and read it on the benchmark machine, this 0.5 ms.
    """
    conversation_id = Conversation._meta.pk.get_db_prep_value(conversation.pk, connection)
    roles = [Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT]
    site_id = conversation.site_id
    # On PostgreSQL, a prepared statement (backend/ops/postgresql): planned once per connection.
    with getattr(connection, "prepared_cursor", connection.cursor)() as cursor:
        ids = [site_id, site_id, conversation_id, client_id, conversation_id]
        cursor.execute(HISTORY_SQL, [*ids, *roles, settings.CHAT_HISTORY_MAX_MESSAGES, conversation_id])
        rows = cursor.fetchall()
    state, has_articles, stamp, existing = rows[0][:4]
    if existing is not None:
        existing = Message._meta.pk.to_python(existing)
    recent = [(role, text) for *_, role, text in rows if role is not None]
    return state, bool(has_articles), uuid.UUID(str(stamp)), existing, recent


# Table names come from the models; every value is a parameter. The duplicate check names the conversation
# itself rather than c.id, so PostgreSQL runs it once instead of once per history row.
HISTORY_SQL = f"""
    SELECT c.state,
        EXISTS (SELECT 1 FROM {Passage._meta.db_table} p WHERE p.site_id = %s),
        (SELECT s.config_stamp FROM {Site._meta.db_table} s WHERE s.id = %s),
        (SELECT d.id FROM {Message._meta.db_table} d WHERE d.conversation_id = %s AND d.client_id = %s),
        h.role, h.text
    FROM {Conversation._meta.db_table} c
    LEFT JOIN (
        SELECT m.role, m.text, m.created FROM {Message._meta.db_table} m
        WHERE m.conversation_id = %s AND m.role IN (%s, %s, %s) AND m.text <> ''
        ORDER BY m.created DESC
        LIMIT %s
    ) h ON 1 = 1
    WHERE c.id = %s
    ORDER BY h.created DESC
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


def within_budget(recent: list[tuple[str, str]]) -> list[ChatMessage]:
    """Keep the newest of (role, text) turns, given newest first, that fit CHAT_HISTORY_TOKEN_BUDGET; oldest first."""
    budget = settings.CHAT_HISTORY_TOKEN_BUDGET
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
    message = Message(
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
    insert(message)
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
