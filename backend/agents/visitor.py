"""The visitor consumer's side of handoff: frames `handoff`, `feedback`, `identify`, `contact`, and live events.

ChatConsumer mixes this in; the frames are documented in docs/protocol.md.
"""

from __future__ import annotations

import logging
import uuid

from channels.db import database_sync_to_async

from backend.agents import events, services
from backend.agents import tickets as agent_tickets
from backend.chat.models import Conversation, Message

log = logging.getLogger(__name__)

AGENT_FRAME_TYPES = frozenset({"handoff", "feedback", "identify", "contact"})


def frame_error(code: str, message: str, reply_to: str | None = None) -> Exception:
    from backend.chat.consumers import FrameError  # the consumer module imports this one

    return FrameError(code, message, reply_to)


class AgentFramesMixin:
    followed_group: str | None = None
    shown_state: str | None = None  # the last state this socket told its widget

    async def show_state(self, state: str) -> None:
        """Send a status frame unless the widget already has this state (direct sends and group events meet here)."""
        if state != self.shown_state:
            self.shown_state = state
            self.forget_history()
            await self.send_frame({"type": "status", "state": state})

    def forget_history(self) -> None:
        """The conversation changed since this connection read it: its next message reads the history before
        calling anyone, rather than calling on what it read last (ChatConsumer.before_reply), which would call
        a provider only to withdraw the request once the read beside it disagrees."""
        self.recent_turns = None

    async def follow_conversation(self, conversation: Conversation) -> None:
        """Receive agent messages and state changes for this conversation (and no longer for the previous one)."""
        group = events.conversation_group(conversation.pk)
        self.shown_state = conversation.state  # the ready frame carries it
        if self.followed_group and self.followed_group != group:
            await self.channel_layer.group_discard(self.followed_group, self.channel_name)
        self.followed_group = group
        try:
            await self.channel_layer.group_add(group, self.channel_name)
        except Exception:  # noqa: BLE001 - the bot still answers; only live agent messages are missed
            log.exception("channel layer unavailable: this visitor socket gets no live agent messages")

    async def unfollow_conversation(self) -> None:
        if self.followed_group:
            await self.channel_layer.group_discard(self.followed_group, self.channel_name)
            self.followed_group = None

    async def announce_message(self, message: Message) -> None:
        """Tell agents about a stored visitor message or a finished bot reply."""
        await events.send(events.message_events(self.session.conversation, message))

    async def on_handoff(self, frame: dict) -> None:
        self.forget_history()
        conversation = self.session.conversation
        changed = await database_sync_to_async(services.request_handoff)(conversation.pk)
        if changed is None:
            # Nothing changed (already waiting, or an agent has it): tell this socket the current state.
            state = await database_sync_to_async(services.current_state)(conversation.pk)
            self.shown_state = state
            await self.send_frame({"type": "status", "state": state})
            return
        await events.send(events.state_events(changed))
        await database_sync_to_async(agent_tickets.queue_summary)(conversation.pk, agent_tickets.HANDOFF)

    async def on_feedback(self, frame: dict) -> None:
        message_id, value = frame.get("message"), frame.get("value")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 100:
            raise frame_error("bad_request", '"message" must be the id of an assistant reply.')
        if value not in (1, -1) or isinstance(value, bool):
            raise frame_error("bad_request", '"value" must be 1 or -1.')
        conversation = self.session.conversation
        try:
            reply_id = uuid.UUID(message_id)
        except ValueError:
            reply_id = None  # refused below like an unknown id
        stored = reply_id is not None and await database_sync_to_async(services.set_feedback)(
            conversation.pk, reply_id, value
        )
        if not stored:
            raise frame_error("bad_request", "There is no assistant reply with that id in this conversation.")
        await events.send(events.feedback_events(conversation, message_id, value))

    async def on_identify(self, frame: dict) -> None:
        email, name = frame.get("email"), frame.get("name")
        if email is None and name is None:
            raise frame_error("bad_request", 'Send "email" or "name".')
        if email is not None:
            try:
                email = services.clean_email(email)
            except ValueError:
                raise frame_error("bad_request", '"email" must be a valid email address.') from None
        if name is not None:
            if not isinstance(name, str) or len(name.strip()) > services.MAX_NAME_LENGTH:
                raise frame_error(
                    "bad_request", f'"name" must be a string of at most {services.MAX_NAME_LENGTH} characters.'
                )
            name = name.strip()
        verified = await database_sync_to_async(services.identify)(
            self.session.visitor.pk, self.site, email, name, frame.get("hash")
        )
        if email is not None and self.site.identity_secret and not verified:
            log.warning("identify: email not verified (missing or wrong hash) site=%s", self.site.key)

    async def on_contact(self, frame: dict) -> None:
        self.forget_history()
        try:
            email = services.clean_email(frame.get("email"))
        except ValueError:
            raise frame_error("bad_request", '"email" must be a valid email address.') from None
        conversation = self.session.conversation
        changed = await database_sync_to_async(services.leave_contact)(conversation.pk, self.session.visitor.pk, email)
        if changed is not None:
            await events.send(events.state_events(changed))
        else:
            fresh = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
            await events.send(events.to_agents(fresh, {"kind": "contact"}))
        # The conversation is kept as a ticket for later: make (or refresh) it now.
        await database_sync_to_async(agent_tickets.queue_summary)(conversation.pk, agent_tickets.CONTACT)

    # -- group events --------------------------------------------------------------------------------------
    async def chat_agent_message(self, event: dict) -> None:
        self.forget_history()
        await self.send_frame(event["frame"])

    async def chat_status(self, event: dict) -> None:
        if event["state"] != Conversation.State.BOT:
            await self.stop_bot_reply()
        await self.show_state(event["state"])

    async def stop_bot_reply(self) -> None:
        # The consumer's: it cancels the reply once, waits for its save, and gives back its claim and quota hold.
        await self.finish_reply()
