"""The new_conversation frame: a fresh conversation for the same visitor, announced by a new ready."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Conversation, Message
from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.fakes.formats import openai_reply

pytestmark = pytest.mark.django_db(transaction=True)
# ORM calls go through channels' helper, which closes its connections (PostgreSQL test teardown needs that).
db = database_sync_to_async


async def test_it_starts_an_empty_conversation_for_the_same_visitor(acme, fake_openai):
    async with chat(acme.key) as ws:
        first = await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "m1", "text": "Hello"})
        await receive_until_end(ws)
        await ws.send_json_to({"type": "new_conversation"})
        fresh = await ws.receive_json_from()
    assert fresh["type"] == "ready"
    assert fresh["visitor"] == first["visitor"]
    assert fresh["conversation"] != first["conversation"]
    assert fresh["history"] == []
    assert fresh["config"]["title"] == "Support"
    # The earlier conversation keeps its messages; nothing was closed or deleted.
    old = await db(Conversation.objects.get)(pk=first["conversation"])
    assert old.state == Conversation.State.BOT
    assert await db(Message.objects.filter(conversation=old).count)() == 2


async def test_messages_after_it_go_to_the_new_conversation_and_reconnects_resume_it(acme, fake_openai):
    async with chat(acme.key) as ws:
        first = await connect_and_hello(ws)
        await ws.send_json_to({"type": "new_conversation"})
        fresh = await ws.receive_json_from()
        await ws.send_json_to({"type": "message", "id": "m1", "text": "Second topic"})
        frames = await receive_until_end(ws)
    assert frames[-1]["text"] == "You said: Second topic"
    assert await db(Message.objects.filter(conversation_id=first["conversation"]).count)() == 0
    assert await db(Message.objects.filter(conversation_id=fresh["conversation"]).count)() == 2
    async with chat(acme.key) as ws:
        again = await connect_and_hello(ws, first["visitor"])
    assert again["conversation"] == fresh["conversation"]
    assert [m["text"] for m in again["history"]] == ["Second topic", "You said: Second topic"]


async def test_it_stops_a_streaming_reply_and_keeps_the_partial_text_in_the_old_conversation(acme, fake_openai):
    fake_openai.queue(openai_reply(["One", " two", " three"] + [" more"] * 50, delay=0.05))
    async with chat(acme.key) as ws:
        first = await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "m1", "text": "Count"})
        assert (await ws.receive_json_from())["type"] == "start"
        assert (await ws.receive_json_from())["type"] == "delta"
        await ws.send_json_to({"type": "new_conversation"})
        frames = []
        while not frames or frames[-1]["type"] != "ready":
            frames.append(await ws.receive_json_from())
    end = next(f for f in frames if f["type"] == "end")
    assert end["status"] == "stopped"
    reply = await db(Message.objects.get)(conversation_id=first["conversation"], role="assistant")
    assert reply.status == "stopped" and reply.text == end["text"]
    assert frames[-1]["conversation"] != first["conversation"]


async def test_it_is_refused_before_hello(acme):
    async with chat(acme.key) as ws:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({"type": "new_conversation"})
        error = await ws.receive_json_from()
    assert error["code"] == "bad_request"
    assert await db(Conversation.objects.count)() == 0
