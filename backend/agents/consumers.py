"""The agents' WebSocket: live inbox and conversation pages in the admin, authenticated by the session."""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from backend.agents import access, events
from backend.chat.models import Conversation
from backend.ops.dispatch import DirectDispatchMixin

log = logging.getLogger(__name__)


def conversation_site_id(conversation_id: Any) -> int | None:
    return Conversation.objects.filter(pk=conversation_id).values_list("site_id", flat=True).first()


def groups_for(user: Any, conversation_id: Any | None) -> list[str]:
    """Return the groups this user may follow; empty when they may not open this page."""
    if not access.is_agent(user) or not user.has_perm("chat.view_conversation"):
        return []
    if conversation_id is not None:
        site_id = conversation_site_id(conversation_id)
        if site_id is None or not access.can_act_on_site(user, site_id):
            return []
        return [events.agents_conversation_group(conversation_id)]
    ids = access.site_ids(user)
    if ids is None:
        return [events.ALL_SITES_GROUP]
    return [events.agents_site_group(site_id) for site_id in ids]


class AgentConsumer(DirectDispatchMixin, AsyncJsonWebsocketConsumer):
    followed: list[str]

    async def connect(self) -> None:
        self.followed = []
        user = self.scope.get("user")
        conversation_id = self.scope["url_route"]["kwargs"].get("conversation")
        groups = await database_sync_to_async(groups_for)(user, conversation_id)
        if not groups:
            # An agent of no site has nothing to follow; the others are refused (HTTP 403 before accept).
            log.info("refused agent websocket: authenticated=%s", bool(user and user.is_authenticated))
            await self.close()
            return
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.followed = groups
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.followed:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "code": "bad_request", "message": 'Only "ping" is accepted here.'})

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None

    async def agents_event(self, event: dict) -> None:
        await self.send_json(event["event"])
