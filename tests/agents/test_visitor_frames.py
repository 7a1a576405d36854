"""The visitor frames of handoff: handoff, feedback, identify, contact (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Conversation, Message, Visitor
from tests.conftest import GLOBEX_ORIGIN, chat, connect_and_hello, receive_until_end

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
SECRET = "a-long-identity-secret-0123456789abcdef"


async def settled(ws) -> None:
    """Wait until the server handled every earlier frame (frames are handled in order)."""
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}


async def expect_error(ws, code: str = "bad_request") -> dict:
    frame = await ws.receive_json_from()
    assert (frame["type"], frame["code"]) == ("error", code), frame
    assert frame["message"]
    return frame


async def visitor_row(ready) -> Visitor:
    return await db(Visitor.objects.get)(conversations__pk=ready["conversation"])


async def answered(ws, text: str = "hi", client_id: str = "c1") -> str:
    await ws.send_json_to({"type": "message", "id": client_id, "text": text})
    return (await receive_until_end(ws))[-1]["message"]


# -- ready ------------------------------------------------------------------------------------------------
async def test_ready_tells_the_state_and_the_sites_handoff_timeout(acme):
    acme.handoff_timeout = 45
    await db(acme.save)()
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
    assert ready["config"]["state"] == "bot"
    assert ready["config"]["handoff_timeout"] == 45


# -- handoff ----------------------------------------------------------------------------------------------
async def test_handoff_puts_the_conversation_in_the_queue(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "handoff"})
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
        # Asking again changes nothing and says so; the waiting time does not restart.
        first = (await db(Conversation.objects.get)(pk=ready["conversation"])).waiting_since
        await ws.send_json_to({"type": "handoff"})
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert conversation.state == "waiting"
    assert conversation.waiting_since == first


async def test_every_tab_of_the_visitor_hears_the_state_change(acme):
    async with chat(acme.key) as first, chat(acme.key) as second:
        ready = await connect_and_hello(first)
        await connect_and_hello(second, ready["visitor"])
        await first.send_json_to({"type": "handoff"})
        assert await first.receive_json_from() == {"type": "status", "state": "waiting"}
        assert await second.receive_json_from() == {"type": "status", "state": "waiting"}


# -- feedback ---------------------------------------------------------------------------------------------
async def test_feedback_on_a_reply_is_stored_and_shown_in_history(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        reply_id = await answered(ws)
        await ws.send_json_to({"type": "feedback", "message": reply_id, "value": 1})
        await settled(ws)
        assert (await db(Message.objects.get)(pk=reply_id)).feedback == 1
        await ws.send_json_to({"type": "feedback", "message": reply_id, "value": -1})
        await settled(ws)
    assert (await db(Message.objects.get)(pk=reply_id)).feedback == -1
    async with chat(acme.key) as ws:
        again = await connect_and_hello(ws, ready["visitor"])
    assert [m.get("feedback") for m in again["history"] if m["role"] == "assistant"] == [-1]


@pytest.mark.parametrize("value", [0, 2, "1", True, None, 1.5])
async def test_feedback_with_a_wrong_value_is_refused_and_changes_nothing(acme, value):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        reply_id = await answered(ws)
        await ws.send_json_to({"type": "feedback", "message": reply_id, "value": value})
        await expect_error(ws)
    assert (await db(Message.objects.get)(pk=reply_id)).feedback is None


async def test_feedback_on_another_conversations_reply_is_refused(acme):
    async with chat(acme.key) as other:
        await connect_and_hello(other)
        theirs = await answered(other, "their question")
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "feedback", "message": theirs, "value": -1})
        await expect_error(ws)
    assert (await db(Message.objects.get)(pk=theirs)).feedback is None


async def test_feedback_on_the_visitors_own_message_or_a_bad_id_is_refused(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await answered(ws)
        own = await db(Message.objects.get)(conversation_id=ready["conversation"], role="user")
        for message_id in (str(own.id), "not-a-uuid", "", 42, None):
            await ws.send_json_to({"type": "feedback", "message": message_id, "value": 1})
            await expect_error(ws)
    assert not await db(Message.objects.filter(feedback__isnull=False).exists)()


# -- identify ---------------------------------------------------------------------------------------------
def site_hash(secret: str, email: str) -> str:
    """What the site owner's server computes (docs/agents.md)."""
    return hmac.new(secret.encode(), email.encode(), hashlib.sha256).hexdigest()


async def with_secret(site, secret: str = SECRET):
    site.identity_secret = secret
    await db(site.save)()


async def test_identify_with_a_valid_hash_trusts_the_email(acme):
    await with_secret(acme)
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to(
            {
                "type": "identify",
                "email": "jane@acme.example",
                "name": "Jane",
                "hash": site_hash(SECRET, "jane@acme.example"),
            }
        )
        await settled(ws)
    visitor = await visitor_row(ready)
    assert (visitor.email, visitor.name, visitor.email_verified) == ("jane@acme.example", "Jane", True)


@pytest.mark.parametrize(
    "given",
    [
        None,
        "",
        "0" * 64,
        site_hash("another-secret-entirely-0123456789", "jane@acme.example"),
        site_hash(SECRET, "someone@else.example"),
        12345,
    ],
)
async def test_identify_with_a_missing_or_wrong_hash_keeps_the_email_unverified(acme, given):
    await with_secret(acme)
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "identify", "email": "jane@acme.example", "hash": given})
        await settled(ws)
    visitor = await visitor_row(ready)
    assert (visitor.email, visitor.email_verified) == ("jane@acme.example", False)


async def test_without_an_identity_secret_no_email_is_ever_verified(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to(
            {"type": "identify", "email": "jane@acme.example", "hash": site_hash("", "jane@acme.example")}
        )
        await settled(ws)
    visitor = await visitor_row(ready)
    assert (visitor.email, visitor.email_verified) == ("jane@acme.example", False)


async def test_a_new_unproven_email_replaces_a_verified_one_as_unverified(acme):
    await with_secret(acme)
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        email = "jane@acme.example"
        await ws.send_json_to({"type": "identify", "email": email, "hash": site_hash(SECRET, email)})
        await ws.send_json_to({"type": "identify", "email": "mallory@evil.example"})
        await settled(ws)
    visitor = await visitor_row(ready)
    assert (visitor.email, visitor.email_verified) == ("mallory@evil.example", False)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "identify"},
        {"type": "identify", "email": "not-an-email"},
        {"type": "identify", "email": 7},
        {"type": "identify", "name": ["Jane"]},
        {"type": "identify", "name": "x" * 201},
    ],
)
async def test_a_bad_identify_is_refused_and_stores_nothing(acme, frame):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to(frame)
        await expect_error(ws)
    visitor = await visitor_row(ready)
    assert (visitor.email, visitor.name) == ("", "")


async def test_identify_with_a_name_only_keeps_the_email(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "identify", "email": "jane@acme.example"})
        await ws.send_json_to({"type": "identify", "name": "  Jane Doe "})
        await settled(ws)
    visitor = await visitor_row(ready)
    assert (visitor.email, visitor.name) == ("jane@acme.example", "Jane Doe")


# -- contact ----------------------------------------------------------------------------------------------
async def test_a_waiting_visitor_leaves_an_email_and_the_conversation_is_kept_for_a_ticket(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "handoff"})
        await ws.receive_json_from()
        await ws.send_json_to({"type": "contact", "email": "jane@acme.example"})
        await settled(ws)
    visitor = await visitor_row(ready)
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert (visitor.email, visitor.email_verified) == ("jane@acme.example", False)
    assert conversation.state == "waiting"
    assert conversation.contact_left_at is not None


async def test_leaving_an_email_from_the_bot_state_queues_the_conversation(acme):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "contact", "email": "jane@acme.example"})
        assert await ws.receive_json_from() == {"type": "status", "state": "waiting"}
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert conversation.contact_left_at is not None


@pytest.mark.parametrize("email", ["nope", "", None, 5, "a@b", "x" * 300 + "@example.com", "x" * 250 + "@ex.com"])
async def test_a_bad_contact_email_is_refused_and_nothing_is_stored(acme, email):
    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "contact", "email": email})
        await expect_error(ws)
    visitor = await visitor_row(ready)
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert visitor.email == ""
    assert (conversation.state, conversation.contact_left_at) == ("bot", None)


async def test_the_new_frames_need_hello_first(acme):
    async with chat(acme.key) as ws:
        await ws.connect()
        for kind in ("handoff", "feedback", "identify", "contact"):
            await ws.send_json_to({"type": kind})
            await expect_error(ws)


async def test_one_sites_visitor_cannot_touch_anothers_reply(acme, globex):
    async with chat(globex.key, origin=GLOBEX_ORIGIN) as ws:
        await connect_and_hello(ws)
        theirs = await answered(ws)
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "feedback", "message": theirs, "value": 1})
        await expect_error(ws)
    assert (await db(Message.objects.get)(pk=theirs)).feedback is None
