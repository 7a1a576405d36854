"""The visitor's WebSocket: the chat protocol of docs/protocol.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from backend.agents import events
from backend.agents.visitor import AGENT_FRAME_TYPES, AgentFramesMixin
from backend.chat import services
from backend.chat.config import ReplyConfig, remember_stamp, reply_config, stamp_key
from backend.chat.models import Message
from backend.kb.grounding import Grounding, ground
from backend.ops import claims, context, health, shutdown
from backend.ops.availability import UNAVAILABLE_MESSAGE, ResilientChannelLayerMixin, retry_unavailable
from backend.ops.coalesce import DeltaSender
from backend.ops.dispatch import DirectDispatchMixin
from backend.providers.base import ChatRequest, ProviderError
from backend.providers.chain import ChainRun
from backend.providers.pricing import cost_usd
from backend.quotas import ratelimit
from backend.quotas import services as quotas
from backend.quotas.redaction import redact
from backend.sites.models import Site

log = logging.getLogger(__name__)

MAX_CLIENT_ID_LENGTH = 100
# How long a resent message waits for another connection's reply to it to be saved (about 5 s).
CLAIM_WAIT_STEPS, CLAIM_WAIT_STEP = 50, 0.1
CLAIMED_ELSEWHERE = object()
# How long storing the visitor's message waits for the reply's first token (store_beside_call).
STORE_WAIT_SECONDS = 0.05


def in_db_thread(function: Any) -> Any:
    """Run ORM work in a worker thread of its own connection, so replies' queries run side by side.

    database_sync_to_async is thread-sensitive by default: every query of the process would wait in one
    thread, and under load the time to first token grows with the queue (docs/benchmarks.md). SQLite takes
    one writer at a time, so there parallel threads would only fight over its lock: it keeps the one thread.
    """
    return database_sync_to_async(function, thread_sensitive=connection.vendor == "sqlite")


class FrameError(Exception):
    """A frame the server refuses; the connection stays open."""

    def __init__(self, code: str, message: str, reply_to: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reply_to = reply_to


class Unconfirmed(Exception):
    """The history read beside a reply's call is not the one its request was built on (HistoryCheck)."""

    def __init__(self, history: services.History | None, failure: Exception | None = None) -> None:
        super().__init__("the reply's guessed history was not confirmed")
        self.history = history  # None when the read failed, with the failure
        self.failure = failure


class HistoryCheck:
    """The read that confirms, beside the provider call, the history a reply's request was built on without
    reading it (services.prepare_guessed): the conversation still the bot's, no help passages, the same
    configuration, the message new (the duplicate check) and the same turns.

    The read starts once the request is written (the first confirm), so its work comes after the request
    instead of before it; it ends long before a provider's first token. The reply waits for it before
    anything reaches the visitor or the database.
    """

    def __init__(self, conversation: Any, client_id: str, assumed: services.History) -> None:
        self.conversation, self.client_id, self.assumed = conversation, client_id, assumed
        self.reading: asyncio.Future | None = None

    async def outcome(self) -> Unconfirmed | None:
        """None when the read confirms the guess; otherwise what it read instead (or why it could not read)."""
        if self.reading is None:
            self.reading = asyncio.ensure_future(in_db_thread(services.read_history)(self.conversation, self.client_id))
        try:
            # Shielded: a stop meanwhile must not lose the answer (answer asks again).
            history = await asyncio.shield(self.reading)
        except health.UNAVAILABLE_ERRORS as failure:
            return Unconfirmed(None, failure)
        return None if history == self.assumed else Unconfirmed(history)

    async def confirm(self) -> None:
        if (unconfirmed := await self.outcome()) is not None:
            raise unconfirmed

    async def holds(self) -> bool:
        return await self.outcome() is None


# One encoder for every frame: json.dumps with any option builds a new one per call. Text as it is, not
# \u-escaped, so a frame is as short as the reply's own characters.
encode_frame = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class ChatConsumer(DirectDispatchMixin, AgentFramesMixin, ResilientChannelLayerMixin, AsyncWebsocketConsumer):
    site: Any = None
    session: services.Session | None = None
    reply_task: asyncio.Task | None = None
    # The reply reply_task is to stream, until it starts: a task cancelled before its first step runs none of
    # its code, so finish_reply gives back what the reply held.
    unstarted: services.PreparedReply | None = None
    claimed: str | None = None  # the client id whose reply this connection holds the claim for
    claim_token = ""  # this connection's, in the claims it takes (backend/ops/claims.py)
    gone = False  # the socket closed: nothing more can be sent on it
    quota: Any = None  # the site's quotas.SiteQuota
    config: Any = None  # the chat.config.ReplyConfig of the last reply, re-read when the site's stamp changes
    client_ip = ""
    holds_connection_slot = False
    # The conversation's (role, text) turns, newest first, as the next reply's prompt would see them; None when
    # the next message is not expected to start a plain reply (a person has the conversation, help passages).
    recent_turns: list[tuple[str, str]] | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        shutdown.track(self)  # SIGTERM stops this consumer's reply first (backend/ops/shutdown.py)
        self.claim_token = uuid.uuid4().hex
        try:
            await super().__call__(scope, receive, send)
        finally:
            # When daphne cancels this call it sends no websocket.disconnect: end the reply here too.
            await self.finish_reply()
            shutdown.untrack(self)

    async def finish_reply(self) -> None:
        """Stop the reply in progress and wait until it is saved; safe to call from several places at once."""
        if self.reply_task and not self.reply_task.done():
            # Cancel once only: a second cancel would interrupt the saving of the partial reply.
            if not self.reply_task.cancelling():
                self.reply_task.cancel()
            await asyncio.gather(self.reply_task, return_exceptions=True)
        # When the task was cancelled before it ever ran:
        await self.release_claim()
        if (prepared := self.unstarted) is not None:
            self.unstarted = None
            try:
                await in_db_thread(quotas.release)(prepared.reservation)
            except health.UNAVAILABLE_ERRORS as failure:
                log.warning(
                    "hold of a reply that never started not given back (it expires): %s", type(failure).__name__
                )

    async def connect(self) -> None:
        site_key = self.scope["url_route"]["kwargs"]["site_key"]
        context.bind(request=context.new_request_id(header(self.scope, b"x-request-id")), site_key=site_key)
        origin = header(self.scope, b"origin")
        self.client_ip = ratelimit.client_ip(self.scope)

        def trip() -> tuple[Site | None, ReplyConfig | None, bool]:
            site = services.find_site(site_key)
            if site is None or not origin or not site.allows_origin(origin):
                return site, None, False
            config = reply_config(site, site.config_stamp)
            remember_stamp(site.pk, site.config_stamp)
            return site, config, ratelimit.open_connection(site.key, self.client_ip, config.quota.ip_connections)

        try:
            site, config, slot = await in_db_thread(trip)()
        except health.UNAVAILABLE_ERRORS as failure:
            # The site cannot be checked: say so on an accepted socket, then close it (4503: try again later).
            log.warning("websocket refused, database unavailable: %s", type(failure).__name__)
            await self.accept()
            await self.send_error("unavailable", UNAVAILABLE_MESSAGE)
            await self.close(code=4503)  # 1013 is not allowed by daphne; 4503: "unavailable"
            return
        if config is None:
            # Closing before accept makes the server refuse the handshake (HTTP 403).
            log.info("refused websocket: site_known=%s origin=%r", site is not None, origin)
            await self.close()
            return
        self.config, self.site, self.quota = config, site, config.quota
        if not slot:
            log.info("refused websocket: too many open connections from one address, site=%s", site.key)
            await self.close()
            return
        self.holds_connection_slot = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        self.gone = True
        if self.holds_connection_slot:
            self.holds_connection_slot = False
            await sync_to_async(ratelimit.close_connection, thread_sensitive=False)(self.site.key, self.client_ip)
        # Wait, so the partial reply is saved before this consumer goes away.
        await self.finish_reply()
        await self.unfollow_conversation()

    async def send_frame(self, frame: dict) -> None:
        if self.gone:
            return
        # Straight to the server, as channels' send() would put it, without its two layers: this runs for
        # every delta of every reply.
        await self.base_send({"type": "websocket.send", "text": encode_frame(frame)})

    async def send_error(self, code: str, message: str, reply_to: str | None = None, **extra: Any) -> None:
        await self.send_frame({"type": "error", "code": code, "message": message, "reply_to": reply_to, **extra})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.CHAT_MAX_FRAME_BYTES:
            await self.close(code=1009)  # "message too big"
            return
        try:
            if text_data is None:
                raise FrameError("bad_request", "Send JSON text frames, not binary ones.")
            frame = self.parse(text_data)
            await self.handle_frame(frame)
        except FrameError as error:
            await self.send_error(error.code, error.message, error.reply_to)
        except health.UNAVAILABLE_ERRORS as failure:
            # Nothing was half-written: each write is one statement, so the visitor can simply resend.
            log.warning("frame refused, service unavailable: %s", type(failure).__name__)
            reply_to = frame.get("id") if frame.get("type") == "message" else None
            await self.send_error("unavailable", UNAVAILABLE_MESSAGE, reply_to if isinstance(reply_to, str) else None)

    def parse(self, text: str) -> dict:
        try:
            frame = json.loads(text)
        except ValueError:
            raise FrameError("bad_request", "The frame is not valid JSON.") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise FrameError("bad_request", 'Each frame must be a JSON object with a "type".')
        return frame

    async def handle_frame(self, frame: dict) -> None:
        kind = frame["type"]
        handler = getattr(self, f"on_{kind}", None) if kind in self.FRAME_TYPES else None
        if handler is None:
            raise FrameError("bad_request", f"Unknown frame type {kind!r}.")
        if self.session is None and kind not in ("hello", "ping"):
            raise FrameError("bad_request", 'Send "hello" first.')
        await handler(frame)

    FRAME_TYPES = frozenset({"hello", "message", "stop", "ping", "new_conversation"}) | AGENT_FRAME_TYPES

    async def on_ping(self, frame: dict) -> None:
        await self.send_frame({"type": "pong"})

    async def on_hello(self, frame: dict) -> None:
        if self.session is not None:
            raise FrameError("bad_request", 'This connection already said "hello".')
        token = frame.get("visitor")
        if token is not None and not isinstance(token, str):
            raise FrameError("bad_request", '"visitor" must be a string or null.')
        self.session = await database_sync_to_async(services.open_session)(self.site, token)
        context.bind(conversation_id=self.session.conversation.pk)
        self.recent_turns = services.recent_turns(self.session)
        config = self.site.widget_config() | {
            "max_length": self.site.max_message_length,
            "available": bool(self.config.endpoints),
            "state": self.session.conversation.state,
            "handoff_timeout": self.site.handoff_timeout,
        }
        await self.follow_conversation(self.session.conversation)
        await self.send_frame(
            {
                "type": "ready",
                "visitor": self.session.token,
                "conversation": str(self.session.conversation.pk),
                "history": self.session.history,
                "config": config,
            }
        )

    async def on_message(self, frame: dict) -> None:
        client_id = frame.get("id")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
            raise FrameError("bad_request", f'"id" must be a string of 1 to {MAX_CLIENT_ID_LENGTH} characters.')
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            raise FrameError("bad_request", '"text" must be a non-empty string.', client_id)
        if len(text) > self.site.max_message_length:
            raise FrameError(
                "too_long",
                f"Your message is {len(text):,} characters; the limit is {self.site.max_message_length:,}.",
                client_id,
            )
        if self.reply_task and not self.reply_task.done():
            raise FrameError("busy", "Please wait until the current reply finishes, or stop it.", client_id)
        try:
            for _ in range(CLAIM_WAIT_STEPS):
                prepared = await self.before_reply(client_id, text)
                if prepared is not CLAIMED_ELSEWHERE:
                    break
                await asyncio.sleep(CLAIM_WAIT_STEP)
            else:
                raise FrameError("busy", "This message is being answered on another connection.", client_id)
        except BaseException:
            await self.release_claim()
            raise
        if isinstance(prepared, int):
            await self.release_claim()
            message = f"You are sending messages too quickly. Please wait {prepared} seconds."
            await self.send_error("rate_limited", message, client_id, retry_after=prepared)
            return
        await self.begin(client_id, prepared)

    async def begin(self, client_id: str, prepared: services.PreparedReply, *, inline: bool = False) -> None:
        """Act on a prepared message: replay its stored reply, acknowledge it while a person has the
        conversation, or start its reply: in a task of its own, or awaited here when `inline` (the reply task
        is running already: its guessed request was withdrawn, see answer)."""
        if prepared.config is not None:
            self.config = prepared.config
            self.site, self.quota = prepared.config.site, prepared.config.quota
        if prepared.reply is not None:
            await self.release_claim()
            await self.replay(client_id, prepared.reply)
            return
        if prepared.reopened is not None:
            # Tell this widget before its reply starts; the group event reaches the visitor's other tabs.
            await self.show_state(prepared.reopened.state)
            await events.send(events.state_events(prepared.reopened))
        if prepared.silent:
            await self.release_claim()
            if prepared.created:
                await self.announce_message(prepared.message)
            ack = {"type": "ack", "reply_to": client_id, "message": str(prepared.message.id), "state": prepared.state}
            await self.send_frame(ack)
            return
        self.unstarted = prepared if prepared.starts_now else None
        check = (
            None if prepared.assumed is None else HistoryCheck(self.session.conversation, client_id, prepared.assumed)
        )
        first_token = stored = None
        if not prepared.saved:
            first_token = asyncio.Event()
            stored = asyncio.ensure_future(self.store_beside_call(prepared, first_token, check))
        reply = self.stream_reply(prepared, client_id, stored, first_token, check)
        if not inline:
            # Not awaited here: this handler returns at once, so a `stop` frame is read while the reply starts.
            self.reply_task = asyncio.create_task(reply)
            if first_token is not None:
                # However the reply ends, even cancelled before it ran, the message is stored.
                self.reply_task.add_done_callback(lambda _: first_token.set())
        if prepared.saved and prepared.created:
            await self.announce_message(prepared.message)
        if inline:
            try:
                await reply
            finally:
                if first_token is not None:
                    first_token.set()

    async def store_beside_call(
        self, prepared: services.PreparedReply, first_token: asyncio.Event, check: HistoryCheck | None = None
    ) -> None:
        """Store the visitor's message once the reply's first token is out, then tell agents about it.

        Not before: its insert and the agents' notice would share the process with the provider's first
        response, and delay it (docs/benchmarks.md). It waits at most STORE_WAIT_SECONDS, so agents see the
        message at once while a slow provider thinks. When the database refuses, the reply's own save
        stores the message with it (persist_reply). When the reply's guessed history is not confirmed, the
        reply decides what becomes of the message (answer), so nothing is stored here.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STORE_WAIT_SECONDS):
                await first_token.wait()
        # After the wait: the check's read starts behind the request, not before it.
        if check is not None and not await check.holds():
            return
        try:
            await in_db_thread(services.store_visitor_message)(prepared.message)
        except health.UNAVAILABLE_ERRORS as failure:
            log.warning("visitor message not stored yet, saved with its reply: %s", type(failure).__name__)
            return
        prepared.saved = True
        try:
            await self.announce_message(prepared.message)
        except health.UNAVAILABLE_ERRORS as failure:
            log.warning("agents not told of a visitor message: %s", type(failure).__name__)

    async def before_reply(self, client_id: str, text: str) -> services.PreparedReply | int | object:
        """Everything before the provider call: one Redis script, and when the connection can guess the
        request, nothing else.

        The script takes the reply claim (another connection, maybe in another process, may be saving its reply
        to this message: then CLAIMED_ELSEWHERE, and the caller waits), counts the visitor's rate limits (the
        seconds to wait when over one) and holds the quota for the request the connection expects: the turns
        it read last and this message. When that hold is made, the reply starts from its guess at once
        (services.prepare_guessed), and the history read that confirms the guess runs beside the call
        (HistoryCheck). Otherwise (nothing to guess from, the hold did not fit, or a claim on this message was
        released lately, so it may be answered already) services.prepare_reply reads and decides, in a worker
        thread. A quota hold made meanwhile is given back when the visitor leaves.
        """
        conversation, recent = self.session.conversation, self.recent_turns
        count = ratelimit.message_count(
            self.site.key,
            self.session.visitor.pk,
            self.client_ip,
            self.quota.visitor_messages_per_minute,
            self.quota.ip_messages_per_minute,
        )
        # The quota is reserved in the claim's script, for the request the turns last read would make.
        guess = None if recent is None else services.guess_reservation(self.config, recent, text)
        stamp = (stamp_key(self.site.pk), str(self.config.stamp))
        attempt = guess and guess.attempt
        # gather(return_exceptions): Redis's error comes back as the answer, raised below after the lost claim
        # is given back.
        claiming = asyncio.gather(
            claims.claim(conversation.pk, client_id, self.claim_token, count.keys, attempt, stamp),
            return_exceptions=True,
        )
        try:
            (claimed,) = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            (claimed,) = await claiming
            if isinstance(claimed, claims.Claimed):
                self.claimed = client_id  # the caller releases it
                if claimed.hold is not None:
                    await in_db_thread(quotas.release)(claimed.hold)
            raise
        # The claim also proves Redis is up: while it is down, messages get `unavailable`.
        if isinstance(claimed, BaseException):
            if isinstance(claimed, health.UNAVAILABLE_ERRORS):
                await self.give_back_lost_claim(client_id, guess)
            raise claimed
        if claimed is None:
            return CLAIMED_ELSEWHERE
        self.claimed, hold = client_id, claimed.hold
        if retry_after := count.retry_after(claimed.counts):
            if hold is not None:
                await in_db_thread(quotas.release)(hold)
            return retry_after
        if guess is not None and hold is not None and not claimed.stale:
            prepared = services.prepare_guessed(conversation, client_id, text, self.config, guess, hold)
            self.recent_turns = prepared.recent
            return prepared
        return await self.prepare_in_thread(client_id, text, None, hold, guess)

    async def prepare_in_thread(
        self,
        client_id: str,
        text: str,
        history: services.History | None,
        hold: quotas.Hold | None = None,
        guess: services.Guess | None = None,
    ) -> services.PreparedReply:
        """services.prepare_reply in a worker thread; when cancelled, what it reserved is given back and the
        message it would have left to the consumer is stored."""
        conversation = self.session.conversation

        def trip() -> services.PreparedReply:
            prepared = services.prepare_reply(conversation, client_id, text, self.config, history, hold, guess)
            # The next message's guess, while nobody else writes to the conversation, under the stamp read.
            self.recent_turns = prepared.recent if prepared.request is not None else None
            if prepared.config is not None and self.recent_turns is not None:
                remember_stamp(prepared.config.site.pk, prepared.config.stamp)
            return prepared

        pending = asyncio.ensure_future(in_db_thread(trip)())
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            prepared = await pending
            if isinstance(prepared, services.PreparedReply):
                if prepared.starts_now:
                    await in_db_thread(quotas.release)(prepared.reservation)
                if not prepared.saved:
                    await in_db_thread(services.store_visitor_message)(prepared.message)
            raise

    async def give_back_lost_claim(self, client_id: str, guess: services.Guess | None) -> None:
        """The claim's script may have run though its answer was lost: give back the claim and the quota hold
        it may have taken, so that the message sent again from another connection is not kept waiting, and
        the hold does not count against the caps until it expires. Either may be down too: they expire."""
        try:
            await claims.release(self.session.conversation.pk, client_id, self.claim_token)
            if guess is not None:
                await in_db_thread(quotas.release)(guess.attempt.hold)
        except health.UNAVAILABLE_ERRORS as failure:
            log.warning("lost reply claim not given back (it expires): %s", type(failure).__name__)

    async def on_stop(self, frame: dict) -> None:
        await self.finish_reply()

    async def on_new_conversation(self, frame: dict) -> None:
        """Start a new conversation for the same visitor and answer with its (empty) ready frame."""
        await self.on_stop(frame)
        await database_sync_to_async(services.start_conversation)(self.session.visitor)
        token, self.session = self.session.token, None
        # hello resumes the visitor's newest open conversation: the one just created.
        await self.on_hello({"type": "hello", "visitor": token})

    async def replay(self, client_id: str, reply: Message) -> None:
        """Answer a resent message with the reply already stored, calling no provider."""
        await self.send_frame({"type": "start", "reply_to": client_id, "message": str(reply.id)})
        await self.send_end(str(reply.id), reply.status, reply.text, reply.sources)

    async def send_end(self, message_id: str, status: str, text: str, sources: list[dict] | None = None) -> None:
        """A reply's last frame: its whole text, and the articles it drew on when there are any."""
        frame = {"type": "end", "message": message_id, "status": status, "text": text}
        await self.send_frame(frame | ({"sources": sources} if sources else {}))

    async def stream_reply(
        self,
        prepared: services.PreparedReply,
        client_id: str,
        stored: asyncio.Future | None,
        first_token: asyncio.Event | None = None,
        check: HistoryCheck | None = None,
    ) -> None:
        self.unstarted = None
        try:
            await self.answer(prepared, client_id, stored, first_token, check)
        finally:
            await self.release_claim()

    async def release_claim(self) -> None:
        """Let other connections answer this message again; called before the reply's last frame."""
        client_id, self.claimed = self.claimed, None
        if client_id is None:
            return
        try:
            await claims.release(self.session.conversation.pk, client_id, self.claim_token)
        except health.UNAVAILABLE_ERRORS as failure:
            log.warning("reply claim not released (it expires): %s", type(failure).__name__)

    async def answer(
        self,
        prepared: services.PreparedReply,
        client_id: str,
        stored: asyncio.Future | None = None,
        first_token: asyncio.Event | None = None,
        check: HistoryCheck | None = None,
    ) -> None:
        """Stream the reply to the visitor, then settle its quota and store it.

        With a `check` (a request built on a guessed history), nothing of the reply reaches the visitor, not
        even its start or its failure, before the check confirms the guess; the request is withdrawn when it
        does not (withdraw).
        """
        conversation = self.session.conversation
        message, priced = prepared.message, prepared.config.endpoints
        if not priced:
            await self.release_claim()
            await self.send_error(
                "not_configured", "This assistant is not set up yet: the site has no AI provider configured.", client_id
            )
            return
        endpoints, prices_in_order = prepared.config.chain()
        grounding, request, reservation = Grounding(), prepared.request, prepared.reservation
        if reservation is None:
            # The site has help passages: find the ones for this question, then reserve for that prompt.
            try:
                grounding = await ground(self.site.pk, message.text, prepared.turns)
                request = services.reply_request(self.site, grounding, prepared.turns)
                # Reserve the worst case before calling anyone: a burst can never push billing past a cap.
                reservation = await quotas.reserve_reply_async(
                    self.site.pk, endpoints, request, prices_in_order, quota=prepared.config.quota
                )
            except health.UNAVAILABLE_ERRORS as failure:
                # The visitor's message is stored without a reply: resending it asks the provider again.
                log.warning("reply not started, service unavailable: %s", type(failure).__name__)
                await self.release_claim()
                await self.send_error("unavailable", UNAVAILABLE_MESSAGE, client_id)
                return
        if isinstance(reservation, quotas.Refusal):
            await self.release_claim()
            await self.send_error("quota_exceeded", reservation.message, client_id)
            return
        reply_id = uuid.uuid4()
        frame_id = str(reply_id)
        start_frame: dict | None = {"type": "start", "reply_to": client_id, "message": frame_id}

        async def send_start() -> None:
            # Once, before the reply's first delta, error or end frame; usually as soon as the request is out.
            nonlocal start_frame
            if start_frame is not None:
                frame, start_frame = start_frame, None
                await self.send_frame(frame)

        async def sent() -> None:
            # The request is out: the check's read starts now, behind it, and the start frame waits for it.
            # Unconfirmed, raised here, closes the request at once, before the provider answers.
            await check.confirm()
            await send_start()

        request = ChatRequest(
            request.system,
            request.messages,
            max_tokens=reservation.max_reply_tokens,
            on_sent=send_start if check is None else sent,
        )
        run = ChainRun(endpoints, request)
        created = timezone.now()
        started = time.monotonic()
        first_token_ms: int | None = None
        parts: list[str] = []
        status = Message.Status.COMPLETE
        error = ""
        deltas = DeltaSender(
            lambda text: self.send_frame({"type": "delta", "message": frame_id, "text": text}),
            settings.CHAT_DELTA_COALESCE_MS / 1000,
        )
        withdrawn: Unconfirmed | None = None
        stopped = False  # by the visitor, or the connection's end
        try:
            # aclosing: a stop or disconnect closes the upstream request at once.
            async with contextlib.aclosing(run.stream()) as chunks:
                async for item in chunks:
                    if first_token_ms is None:
                        first_token_ms = int((time.monotonic() - started) * 1000)
                        if check is not None:
                            await check.confirm()
                        await send_start()
                    parts.append(item)
                    await deltas.add(item)
                    if first_token is not None and not first_token.is_set():
                        first_token.set()
        except Unconfirmed as unconfirmed:
            status, withdrawn = Message.Status.STOPPED, unconfirmed
        except asyncio.CancelledError:
            status, stopped = Message.Status.STOPPED, True
            if check is not None and not parts:
                withdrawn = await check.outcome()
        except ProviderError as failure:
            status = Message.Status.ERROR
            error = failure.message
            if check is not None and not parts:
                withdrawn = await check.outcome()
            if withdrawn is None:
                await send_start()
                await deltas.close()  # the text that arrived goes out before the error
                await self.send_error(
                    "provider_error", "The assistant could not answer just now. Please try again.", client_id
                )
        if withdrawn is None:
            await send_start()  # stopped before the request was out
        await deltas.close()
        endpoint = run.endpoint or endpoints[0]
        prices = next(price for candidate, price in priced if candidate is endpoint)
        text = "".join(parts)
        sources = grounding.sources_for(endpoint, run.end, text)
        input_tokens, output_tokens, estimated = services.reply_usage(request, text, run.end)
        latency_ms = int((time.monotonic() - started) * 1000)
        # A failure before any text was a refused request, which providers do not bill; it leaves no reply
        # behind either, so resending the message tries again.
        refused = status == Message.Status.ERROR and not text
        billed = (0, 0) if refused else (input_tokens, output_tokens)
        reply = None
        if not refused and withdrawn is None:
            reply = {
                "reply_id": reply_id,
                "conversation": conversation,
                "reply_to": message,
                "text": text,
                "status": status,
                "created": created,
                "provider": endpoint.kind,
                "model": endpoint.model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "usage_estimated": estimated,
                "attempts": len(run.attempts),
                "latency_ms": latency_ms,
                "first_token_ms": first_token_ms,
                "error": error,
                "sources": sources,
            }
        usage = {
            "kind": endpoint.kind,
            "model": endpoint.model,
            "input_tokens": billed[0],
            "output_tokens": billed[1],
            "status": status,
            "conversation_id": conversation.pk,
            "latency_ms": latency_ms,
            "first_token_ms": first_token_ms,
            "usage_estimated": estimated,
            "attempts": len(run.attempts),
        }
        saved, cost = None, None
        if stored is not None:
            first_token.set()  # when no text came, the message is stored now
            # Shielded: a stop arriving now must not interrupt the wait for the message's own save.
            await asyncio.shield(asyncio.gather(stored, return_exceptions=True))
        unsaved = None if prepared.saved or withdrawn is not None else message
        persist = in_db_thread(self.persist_reply)
        try:
            if withdrawn is not None:
                # Settled once, not retried: withdraw tells the visitor at once what became of the message.
                saved, cost = await persist(reservation, prices, usage, None)
            else:
                saved, cost = await retry_unavailable(persist, reservation, prices, usage, reply, unsaved)
                prepared.saved = True
        except health.UNAVAILABLE_ERRORS as failure:
            # The visitor still gets the text below; the reservation expires, and a resend asks again.
            log.error("reply not saved, service unavailable: %s", type(failure).__name__)
            if withdrawn is None:
                await self.send_error("unavailable", UNAVAILABLE_MESSAGE, client_id)
        log_call = log.warning if status == Message.Status.ERROR else log.info
        log_call(
            "provider call: site=%s provider=%s model=%s status=%s attempts=%s latency_ms=%s first_token_ms=%s "
            "tokens_in=%s tokens_out=%s estimated=%s cost_usd=%s reason=%s",
            self.site.key,
            endpoint.kind,
            endpoint.model,
            status,
            len(run.attempts),
            latency_ms,
            first_token_ms,
            input_tokens,
            output_tokens,
            estimated,
            cost,
            redact(error) if error else "-",
        )
        if withdrawn is not None:
            await self.withdraw(prepared, client_id, withdrawn, stopped, frame_id)
            return
        if saved is not None and text and self.recent_turns is not None:
            turns = [(Message.Role.ASSISTANT, text), *self.recent_turns]
            self.recent_turns = turns[: settings.CHAT_HISTORY_MAX_MESSAGES]
        if unsaved is not None and prepared.saved:
            await self.announce_message(unsaved)  # stored with the reply, just now
        if saved is not None:
            await self.announce_message(saved)
        # Released before the last frame, so a client that resends at once finds the message free.
        await self.release_claim()
        await self.send_end(frame_id, status, text, sources)

    async def withdraw(
        self, prepared: services.PreparedReply, client_id: str, withdrawn: Unconfirmed, stopped: bool, frame_id: str
    ) -> None:
        """After a request built on a guessed history the read did not confirm, closed before anything of it
        reached the visitor (its cost is settled as a stopped call: the provider may bill the prompt).

        The message is then prepared again from the history read, holding the same claim: a stored reply is
        replayed, a person's conversation acknowledged, or a new request made. A visitor who stopped the
        reply meanwhile gets its end, and their message is stored if it is new.
        """
        history = withdrawn.history
        self.recent_turns = None  # the next message reads first, unless the new trip below guesses again
        try:
            if history is None:
                raise withdrawn.failure
            if stopped:
                if history[3] is None:
                    await in_db_thread(services.store_visitor_message)(prepared.message)
                await self.release_claim()
                await self.send_frame({"type": "start", "reply_to": client_id, "message": frame_id})
                await self.send_end(frame_id, Message.Status.STOPPED, "")
                return
            again = await self.prepare_in_thread(client_id, prepared.message.text, history)
        except health.UNAVAILABLE_ERRORS as failure:
            # The message is not stored: the visitor resends it when told.
            log.warning("reply withdrawn, service unavailable: %s", type(failure).__name__)
            await self.release_claim()
            await self.send_error("unavailable", UNAVAILABLE_MESSAGE, client_id)
            return
        await self.begin(client_id, again, inline=True)

    def persist_reply(
        self,
        reservation: Any,
        prices: tuple | None,
        usage: dict,
        reply: dict | None,
        unsaved: Message | None = None,
    ) -> tuple[Message | None, Any]:
        """Settle the quota and store the reply in one transaction, priced with the prices read beside its endpoint.

        `unsaved` is the visitor's message when storing it beside the call failed: it is stored here first.
        """
        cost = cost_usd(prices, usage["input_tokens"], usage["output_tokens"])
        # Atomic, so a retry after a lost connection never finds half of it written.
        with transaction.atomic():
            if unsaved is not None:
                services.store_visitor_message(unsaved)
            quotas.settle(reservation, cost=cost, **usage)
            saved = services.save_reply(cost=cost, **reply) if reply is not None else None
        return saved, cost
