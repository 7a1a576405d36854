"""The visitor WebSocket protocol of docs/protocol.md, against a fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Conversation, Message, Visitor
from backend.sites.provisioning import SiteSpec, create_site
from tests.conftest import ACME_ORIGIN, FAKE_KEY, GLOBEX_ORIGIN, chat, connect_and_hello, receive_until_end
from tests.fakes.formats import openai_error, openai_reply
from tests.fakes.server import Reply

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


async def send_message(communicator, text: str, client_id: str = "c1") -> list[dict]:
    await communicator.send_json_to({"type": "message", "id": client_id, "text": text})
    return await receive_until_end(communicator)


async def expect_error(communicator, code: str) -> dict:
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame["message"], "every error carries a sentence for humans"
    return frame


# -- the handshake -----------------------------------------------------------------------------------------
async def test_it_refuses_an_unknown_site(acme):
    async with chat("no-such-site") as ws:
        connected, _ = await ws.connect()
        assert not connected


async def test_it_refuses_a_connection_without_origin(acme):
    async with chat(acme.key, origin=None) as ws:
        connected, _ = await ws.connect()
        assert not connected


async def test_it_refuses_an_origin_the_site_does_not_allow(acme, globex):
    for origin in [GLOBEX_ORIGIN, "https://acme.example.evil.com", "http://acme.example", "https://acme.example:8443"]:
        async with chat(acme.key, origin=origin) as ws:
            connected, _ = await ws.connect()
            assert not connected, origin


# -- hello and visitors ------------------------------------------------------------------------------------
async def test_a_new_visitor_gets_a_random_token_that_is_stored_hashed(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
    token = ready["visitor"]
    assert len(token) >= 22  # at least 128 bits in URL-safe base64
    assert ready["history"] == []
    assert ready["config"]["title"] == acme.title
    assert ready["config"]["available"] is True
    visitor = await db(Visitor.objects.get)(site=acme)
    assert visitor.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not await db(Visitor.objects.filter(token_hash=token).exists)()


async def test_a_returning_visitor_sees_their_conversation_again(acme):
    async with chat(acme.key) as ws:
        first = await connect_and_hello(ws)
        await send_message(ws, "Where is my order?")
    async with chat(acme.key) as ws:
        again = await connect_and_hello(ws, first["visitor"])
    assert again["visitor"] == first["visitor"]
    assert again["conversation"] == first["conversation"]
    assert [(m["role"], m["text"]) for m in again["history"]] == [
        ("user", "Where is my order?"),
        ("assistant", "You said: Where is my order?"),
    ]
    assert all(m["status"] == "complete" and m["id"] and m["created"] for m in again["history"])


async def test_another_sites_visitor_token_gets_a_fresh_visitor_and_no_history(acme, globex):
    async with chat(globex.key, origin=GLOBEX_ORIGIN) as ws:
        theirs = await connect_and_hello(ws)
        await send_message(ws, "my secret order 42")
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws, theirs["visitor"])
    assert ready["visitor"] != theirs["visitor"]
    assert ready["conversation"] != theirs["conversation"]
    assert ready["history"] == []


@pytest.mark.parametrize("token", ["not-a-real-token", "", "x" * 5000])
async def test_an_unknown_or_malformed_token_gets_a_fresh_visitor(acme, token):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws, token)
    assert ready["visitor"] != token
    assert ready["history"] == []


async def test_a_visitor_token_of_the_wrong_type_is_a_bad_request(acme):
    async with chat(acme.key) as ws:
        await ws.connect()
        await ws.send_json_to({"type": "hello", "visitor": 12345})
        await expect_error(ws, "bad_request")
        ready = await connect_and_hello_again(ws)
        assert ready["type"] == "ready"


async def connect_and_hello_again(ws) -> dict:
    await ws.send_json_to({"type": "hello"})
    return await ws.receive_json_from()


async def test_a_frame_before_hello_is_a_bad_request(acme, fake_openai):
    async with chat(acme.key) as ws:
        await ws.connect()
        await ws.send_json_to({"type": "message", "id": "c1", "text": "hi"})
        await expect_error(ws, "bad_request")
    assert fake_openai.requests == []
    assert not await db(Message.objects.exists)()


async def test_ping_gets_pong(acme):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from() == {"type": "pong"}


# -- bad frames keep the connection open and store nothing --------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        "not json {",
        "[1, 2]",
        '"hello"',
        '{"no": "type"}',
        '{"type": "launch_missiles"}',
        '{"type": "message", "text": "no id"}',
        '{"type": "message", "id": "c1"}',
        '{"type": "message", "id": 7, "text": "id is a number"}',
        '{"type": "message", "id": "c1", "text": ["not", "a", "string"]}',
        '{"type": "message", "id": "c1", "text": "   "}',
        '{"type": "message", "id": "", "text": "empty id"}',
    ],
)
async def test_bad_frames_are_refused_and_the_connection_stays_open(acme, fake_openai, raw):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_to(text_data=raw)
        await expect_error(ws, "bad_request")
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from() == {"type": "pong"}
    assert fake_openai.requests == []
    assert not await db(Message.objects.exists)()


async def test_a_binary_frame_is_a_bad_request(acme):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_to(bytes_data=b"\x00\x01")
        await expect_error(ws, "bad_request")


async def test_a_message_over_the_sites_limit_is_too_long_and_not_stored(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "a" * (acme.max_message_length + 1)})
        error = await expect_error(ws, "too_long")
        assert error["reply_to"] == "c1"
        assert "4,000" in error["message"]
    assert fake_openai.requests == []
    assert not await db(Message.objects.exists)()


async def test_a_frame_over_64_kib_closes_the_connection(acme):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_to(text_data=json.dumps({"type": "message", "id": "c1", "text": "a" * 70_000}))
        closed = await ws.receive_output()
        assert closed == {"type": "websocket.close", "code": 1009}
    assert not await db(Message.objects.exists)()


# -- streaming ---------------------------------------------------------------------------------------------
async def test_the_reply_streams_in_token_by_token_and_is_stored_once(acme, fake_openai):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        frames = await send_message(ws, "How do I reset my password?")
    start, *deltas, end = frames
    assert start == {"type": "start", "reply_to": "c1", "message": start["message"]}
    assert len(deltas) > 3 and all(d["type"] == "delta" and d["message"] == start["message"] for d in deltas)
    assert end == {
        "type": "end",
        "message": start["message"],
        "status": "complete",
        "text": "You said: How do I reset my password?",
    }
    assert "".join(d["text"] for d in deltas) == end["text"]

    sent = fake_openai.requests[0]
    body = sent.json()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": acme.system_prompt}
    assert body["messages"][-1] == {"role": "user", "content": "How do I reset my password?"}
    assert body["max_tokens"] == acme.max_reply_tokens

    reply = await db(Message.objects.get)(id=start["message"])
    assert str(reply.conversation_id) == ready["conversation"]
    assert (reply.role, reply.status, reply.text) == ("assistant", "complete", end["text"])
    assert reply.provider == "openai" and reply.model == "gpt-4o-mini"
    assert reply.input_tokens > 0 and reply.output_tokens == len(deltas) and not reply.usage_estimated
    assert reply.latency_ms is not None and reply.first_token_ms is not None
    assert reply.first_token_ms <= reply.latency_ms
    user = await db(Message.objects.get)(role="user")
    assert (user.text, user.client_id) == ("How do I reset my password?", "c1")
    assert reply.reply_to_id == user.id


async def test_earlier_turns_are_sent_to_the_provider(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await send_message(ws, "first question", "c1")
        await send_message(ws, "second question", "c2")
    messages = fake_openai.requests[1].json()["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "first question"
    assert messages[2]["content"] == "You said: first question"


async def test_old_turns_beyond_the_token_budget_are_left_out(acme, fake_openai, settings):
    settings.CHAT_HISTORY_TOKEN_BUDGET = 300
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await send_message(ws, "old " * 400, "c1")
        await send_message(ws, "new question", "c2")
    messages = fake_openai.requests[1].json()["messages"]
    assert [m["content"] for m in messages[1:]] == ["new question"]


async def test_a_resent_message_replays_its_reply_without_calling_the_provider(acme, fake_openai):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        first = await send_message(ws, "Hello?")
    async with chat(acme.key) as ws:
        await connect_and_hello(ws, ready["visitor"])
        again = await send_message(ws, "Hello?")
    assert len(fake_openai.requests) == 1
    assert [f["type"] for f in again] == ["start", "end"]
    assert again[0]["message"] == first[0]["message"]
    assert again[1]["text"] == first[-1]["text"] and again[1]["status"] == "complete"
    assert await db(Message.objects.count)() == 2


async def test_a_message_while_a_reply_streams_is_busy(acme, fake_openai):
    fake_openai.queue(openai_reply(["one", " two", " three", " four"], delay=0.2))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "slow one"})
        assert (await ws.receive_json_from())["type"] == "start"
        await ws.send_json_to({"type": "message", "id": "c2", "text": "impatient"})
        frames = await receive_until_end(ws)
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["code"], e["reply_to"]) for e in errors] == [("busy", "c2")]
    assert frames[-1]["status"] == "complete"
    assert len(fake_openai.requests) == 1
    assert not await db(Message.objects.filter(client_id="c2").exists)()


async def test_stop_ends_the_reply_keeps_the_partial_text_and_closes_the_upstream(acme, fake_openai):
    fake_openai.queue(openai_reply(["Part", " one", " two", " three", " four", " five"], delay=0.3))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "tell me a long story"})
        start = await ws.receive_json_from()
        delta = await ws.receive_json_from()
        assert delta["type"] == "delta"
        await ws.send_json_to({"type": "stop"})
        frames = await receive_until_end(ws)
    end = frames[-1]
    assert end["status"] == "stopped"
    assert end["text"].startswith("Part") and end["text"] != "Part one two three four five"
    assert fake_openai.wait_for(lambda: fake_openai.disconnects == 1), "the upstream request must be closed"
    reply = await db(Message.objects.get)(id=start["message"])
    assert (reply.status, reply.text) == ("stopped", end["text"])
    assert reply.usage_estimated and reply.output_tokens > 0


async def test_a_visitor_who_disconnects_mid_stream_leaves_the_partial_reply_saved(acme, fake_openai):
    fake_openai.queue(openai_reply(["Part", " one", " two", " three", " four"], delay=0.3))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "hi"})
        start = await ws.receive_json_from()
        await ws.receive_json_from()  # the first delta
    assert fake_openai.wait_for(lambda: fake_openai.disconnects == 1)
    reply = await db(Message.objects.get)(id=start["message"])
    assert reply.status == "stopped" and reply.text.startswith("Part")


async def test_an_upstream_500_is_a_provider_error_and_keeps_the_visitors_message(acme, fake_openai, caplog):
    fake_openai.queue(openai_error(500, "The server had an error", "server_error"))
    caplog.set_level(logging.INFO)
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Is anyone there?"})
        frames = await receive_until_end(ws)
        assert [f["type"] for f in frames] == ["start", "error", "end"]
        assert frames[1]["code"] == "provider_error" and frames[1]["reply_to"] == "c1"
        assert frames[2]["status"] == "error"
        # Resending the same message tries again, and this time the provider answers.
        retry = await send_message(ws, "Is anyone there?")
    assert retry[-1]["status"] == "complete"
    assert await db(Message.objects.filter(role="user").count)() == 1
    assert "500" in caplog.text
    assert FAKE_KEY not in caplog.text and FAKE_KEY not in json.dumps(frames)


async def test_an_upstream_cut_mid_stream_ends_in_error_with_the_partial_text(acme, fake_openai):
    fake_openai.queue(Reply(pieces=openai_reply(["Half", " an", " answer", " and", " more"]).pieces, cut_after=4))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        frames = await send_message(ws, "hi")
    end = frames[-1]
    assert any(f["type"] == "error" and f["code"] == "provider_error" for f in frames)
    assert end["status"] == "error" and end["text"] == "Half an"
    reply = await db(Message.objects.get)(id=end["message"])
    assert (reply.status, reply.text) == ("error", "Half an")


async def test_a_site_without_a_provider_says_so(fake_openai):
    site = await db(create_site)(SiteSpec(name="Bare", origins=[ACME_ORIGIN]))
    async with chat(site.key) as ws:
        ready = await connect_and_hello(ws)
        assert ready["config"]["available"] is False
        await ws.send_json_to({"type": "message", "id": "c1", "text": "hello?"})
        error = await expect_error(ws, "not_configured")
        assert "no AI provider" in error["message"]
    assert await db(Message.objects.filter(role="user").count)() == 1


async def test_the_conversation_is_marked_active_after_a_reply(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        before = (await db(Conversation.objects.get)(pk=ready["conversation"])).last_activity
        await send_message(ws, "hi")
    after = (await db(Conversation.objects.get)(pk=ready["conversation"])).last_activity
    assert after > before


async def test_two_messages_in_a_row_each_get_a_reply(acme):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        one = await send_message(ws, "one", "c1")
        two = await send_message(ws, "two", "c2")
    assert one[-1]["text"] == "You said: one" and two[-1]["text"] == "You said: two"
    await asyncio.sleep(0)


async def test_each_reply_stores_its_cost_from_the_price_table(acme, fake_openai):
    from decimal import Decimal

    fake_openai.queue(openai_reply(["Hi", "!"], usage=(1000, 500)))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        frames = await send_message(ws, "hello")
    reply = await db(Message.objects.get)(id=frames[-1]["message"])
    # gpt-4o-mini: 0.15 USD per million input tokens, 0.60 per million output tokens.
    assert reply.cost == Decimal("0.000150") + Decimal("0.000300")
    assert reply.attempts == 1
