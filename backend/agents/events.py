"""Channel-layer groups and events between visitor sockets, agent pages and admin views.

Only finished messages and state changes travel through the channel layer; streaming deltas never do.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from backend.chat.models import Conversation, Message
from backend.ops.layers import GroupCheckingRedisChannelLayer

log = logging.getLogger(__name__)

Event = tuple[str, dict]

ALL_SITES_GROUP = "agents_all"


def conversation_group(conversation_id: Any) -> str:
    """Name the group of the visitor sockets showing one conversation."""
    return f"conversation_{conversation_id}"


def agents_conversation_group(conversation_id: Any) -> str:
    return f"agents_conversation_{conversation_id}"


def agents_site_group(site_id: int) -> str:
    return f"agents_site_{site_id}"


def message_payload(message: Message) -> dict:
    """Return a message as agent pages show it (JSON- and msgpack-safe)."""
    return {
        "id": str(message.id),
        "role": message.role,
        "text": message.text,
        "status": message.status,
        "author": message.author,
        "created": message.created.isoformat(),
        "provider": message.provider,
        "model": message.model,
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens,
        "cost": str(message.cost),
        "feedback": message.feedback,
    }


def for_agent_pages(conversation_id: Any, event: dict) -> dict:
    """Wrap an event about a conversation as the agents' consumers receive it (AgentConsumer.agents_event)."""
    return {"type": "agents.event", "event": event | {"conversation": str(conversation_id)}}


def to_agents(conversation: Conversation, event: dict) -> list[Event]:
    """Address an event to the inbox of the conversation's site and to its open conversation pages."""
    wrapped = for_agent_pages(conversation.pk, event)
    return [
        (ALL_SITES_GROUP, wrapped),
        (agents_site_group(conversation.site_id), wrapped),
        (agents_conversation_group(conversation.pk), wrapped),
    ]


def message_events(conversation: Conversation, message: Message) -> list[Event]:
    """Announce a stored message to agents, and an agent's message to the visitor too."""
    events = to_agents(conversation, {"kind": "message", "message": message_payload(message)})
    if message.role == Message.Role.AGENT:
        frame = {
            "type": "message",
            "role": "agent",
            "id": str(message.id),
            "text": message.text,
            "author": message.author,
        }
        events.append((conversation_group(conversation.pk), {"type": "chat.agent_message", "frame": frame}))
    return events


def state_events(conversation: Conversation) -> list[Event]:
    waiting_since = conversation.waiting_since.isoformat() if conversation.waiting_since else None
    events = to_agents(conversation, {"kind": "state", "state": conversation.state, "waiting_since": waiting_since})
    events.append((conversation_group(conversation.pk), {"type": "chat.status", "state": conversation.state}))
    return events


def ticket_events(conversation_id: Any, state: str) -> list[Event]:
    """Tell a conversation's open pages that its ticket changed (a summary finished or failed): they refresh
    their ticket panel. The inbox does not show tickets, so only the conversation's pages are told."""
    event = for_agent_pages(conversation_id, {"kind": "ticket", "state": str(state)})
    return [(agents_conversation_group(conversation_id), event)]


def feedback_events(conversation: Conversation, message_id: str, value: int) -> list[Event]:
    return to_agents(conversation, {"kind": "feedback", "message": message_id, "value": value})


async def send(events: list[Event]) -> bool:
    """Deliver events; return False (and log) when the channel layer is unreachable."""
    layer = get_channel_layer()
    try:
        if isinstance(layer, GroupCheckingRedisChannelLayer):
            await layer.group_send_many(events)
        else:
            for group, event in events:
                await layer.group_send(group, event)
    except Exception:  # noqa: BLE001 - the message is stored; a dead layer must not lose it
        log.exception("channel layer unavailable: %d live events not delivered", len(events))
        return False
    return True


def send_sync(events: list[Event]) -> bool:
    return async_to_sync(send)(events)
