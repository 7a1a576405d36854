"""The agents' WebSocket: who may open it, and what arrives on it live."""

from __future__ import annotations

import asyncio
import os

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Conversation
from tests.agents.conftest import agent_socket, conversation_for, next_event
from tests.conftest import chat, connect_and_hello, receive_until_end

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


async def refused(path: str, user=None, **kwargs) -> bool:
    async with agent_socket(path, user, **kwargs) as ws:
        connected, _ = await ws.connect()
        return not connected


async def test_anonymous_visitors_are_refused(acme):
    conversation = await db(conversation_for)(acme)
    assert await refused("/ws/agent/inbox/")
    assert await refused(f"/ws/agent/conversations/{conversation.pk}/")


async def test_users_who_are_not_staff_are_refused(acme, pat):
    conversation = await db(conversation_for)(acme)
    assert await refused("/ws/agent/inbox/", pat)
    assert await refused(f"/ws/agent/conversations/{conversation.pk}/", pat)


async def test_an_agent_of_another_site_cannot_follow_a_conversation(acme, gus):
    conversation = await db(conversation_for)(acme)
    assert await refused(f"/ws/agent/conversations/{conversation.pk}/", gus)


async def test_an_unknown_conversation_is_refused(acme, ann):
    assert await refused("/ws/agent/conversations/00000000-0000-0000-0000-000000000000/", ann)


async def test_a_staff_user_with_no_site_is_refused_the_inbox(acme, ann):
    await db(ann.agent_assignments.all().delete)()
    assert await refused("/ws/agent/inbox/", ann)


async def test_staff_assigned_to_the_site_without_the_view_permission_are_refused(acme, ann):
    await db(ann.groups.clear)()
    assert await refused("/ws/agent/inbox/", ann)


async def test_another_pages_origin_is_refused_even_with_the_session(acme, ann):
    # A page elsewhere must not use the agent's cookie to read the inbox (cross-site WebSocket hijacking).
    assert await refused("/ws/agent/inbox/", ann, origin="https://evil.example")


async def test_an_agent_of_the_site_and_a_superuser_are_accepted(acme, ann, root):
    conversation = await db(conversation_for)(acme)
    for user in (ann, root):
        for path in ("/ws/agent/inbox/", f"/ws/agent/conversations/{conversation.pk}/"):
            async with agent_socket(path, user) as ws:
                connected, _ = await ws.connect()
                assert connected, (user, path)
                await ws.send_json_to({"type": "ping"})
                assert await ws.receive_json_from() == {"type": "pong"}


async def test_a_visitor_message_and_the_bot_reply_reach_the_inbox_live(acme, ann, sync_thread_hops):
    async with agent_socket("/ws/agent/inbox/", ann) as inbox, chat(acme.key) as visitor:
        assert (await inbox.connect())[0]
        ready = await connect_and_hello(visitor)
        await visitor.send_json_to({"type": "message", "id": "c1", "text": "Where is my parcel?"})
        frames = await receive_until_end(visitor)
        first = await next_event(inbox, "message")
        assert first["conversation"] == ready["conversation"]
        assert (first["message"]["role"], first["message"]["text"]) == ("user", "Where is my parcel?")
        second = await next_event(inbox, "message")
        assert second["message"]["role"] == "assistant"
        assert second["message"]["text"] == frames[-1]["text"] == "You said: Where is my parcel?"
        assert second["message"]["id"] == frames[-1]["message"]
        # Streaming deltas never travel through the channel layer: only whole messages do.
        assert await inbox.receive_nothing(timeout=0.2)
    # As on the chat socket (tests/test_reply_path.py), each event skips channels' hop to the sync thread.
    assert sync_thread_hops == []


async def test_an_agent_of_another_site_hears_nothing_of_it(acme, globex, gus):
    async with agent_socket("/ws/agent/inbox/", gus) as inbox, chat(acme.key) as visitor:
        assert (await inbox.connect())[0]
        await connect_and_hello(visitor)
        await visitor.send_json_to({"type": "message", "id": "c1", "text": "private to acme"})
        await receive_until_end(visitor)
        await visitor.send_json_to({"type": "handoff"})
        assert (await visitor.receive_json_from())["state"] == "waiting"
        assert await inbox.receive_nothing(timeout=0.3)


async def test_a_handoff_reaches_the_inbox_and_the_conversation_page_live(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        path = f"/ws/agent/conversations/{ready['conversation']}/"
        async with agent_socket("/ws/agent/inbox/", ann) as inbox, agent_socket(path, ann) as page:
            assert (await inbox.connect())[0]
            assert (await page.connect())[0]
            await visitor.send_json_to({"type": "handoff"})
            assert await visitor.receive_json_from() == {"type": "status", "state": "waiting"}
            for ws in (inbox, page):
                event = await next_event(ws, "state")
                assert event["state"] == "waiting"
                assert event["conversation"] == ready["conversation"]
                assert event["waiting_since"]
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert conversation.state == "waiting"
    assert conversation.waiting_since is not None


async def test_feedback_reaches_the_conversation_page(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await visitor.send_json_to({"type": "message", "id": "c1", "text": "hi"})
        reply_id = (await receive_until_end(visitor))[-1]["message"]
        async with agent_socket(f"/ws/agent/conversations/{ready['conversation']}/", ann) as page:
            assert (await page.connect())[0]
            await visitor.send_json_to({"type": "feedback", "message": reply_id, "value": -1})
            event = await next_event(page, "feedback")
            assert (event["message"], event["value"]) == (reply_id, -1)


async def test_a_bad_frame_on_the_agent_socket_gets_an_error_and_keeps_it_open(acme, ann):
    async with agent_socket("/ws/agent/inbox/", ann) as ws:
        assert (await ws.connect())[0]
        await ws.send_to(text_data="not json")
        assert (await ws.receive_json_from())["code"] == "bad_request"
        await ws.send_json_to({"type": "reply", "text": "x"})
        assert (await ws.receive_json_from())["code"] == "bad_request"
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from() == {"type": "pong"}


@pytest.mark.services
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs the Redis channel layer (REDIS_URL)")
async def test_idle_sockets_stay_open_with_the_redis_channel_layer(acme, ann):
    # An agent's inbox sits idle for minutes; a Redis read timeout shorter than channels_redis's blocking
    # pop (5 s) used to kill idle consumers. Idling past it must leave both kinds of socket working.
    conversation = await db(conversation_for)(acme)
    async with agent_socket(f"/ws/agent/conversations/{conversation.pk}/", ann) as page, chat(acme.key) as visitor:
        assert (await page.connect())[0]
        assert (await visitor.connect())[0]
        await asyncio.sleep(7)
        await page.send_json_to({"type": "ping"})
        assert await page.receive_json_from() == {"type": "pong"}
        await visitor.send_json_to({"type": "ping"})
        assert await visitor.receive_json_from() == {"type": "pong"}
