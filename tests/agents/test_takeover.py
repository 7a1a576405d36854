"""Takeover and hand back: an agent's reply reaches the visitor live, and the bot stays quiet meanwhile."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Conversation, Message
from tests.agents.conftest import login
from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.fakes.formats import openai_reply

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


def page(conversation_id: str) -> str:
    return f"/admin/chat/conversation/{conversation_id}/change/"


async def post_as(user, conversation_id: str, data: dict):
    client = await db(login)(user)
    return await db(client.post)(page(conversation_id), data)


async def test_an_agent_reply_reaches_the_connected_visitor_at_once(acme, ann, fake_openai):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        response = await post_as(ann, ready["conversation"], {"reply": "Hello, I am Ann. How can I help?"})
        assert response.status_code == 302
        assert await visitor.receive_json_from() == {"type": "status", "state": "agent"}
        frame = await visitor.receive_json_from()
    stored = await db(Message.objects.get)(conversation_id=ready["conversation"], role="agent")
    assert frame == {
        "type": "message",
        "role": "agent",
        "id": str(stored.id),
        "text": "Hello, I am Ann. How can I help?",
        "author": "Ann Agent",
    }
    assert stored.author == "Ann Agent"
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert conversation.state == "agent"
    assert await db(lambda: conversation.assigned_agent.username)() == "ann"
    assert fake_openai.requests == []


async def test_a_returning_visitor_sees_the_agents_message_with_its_author(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"reply": "We're on it."})
    async with chat(acme.key) as visitor:
        again = await connect_and_hello(visitor, ready["visitor"])
    assert again["config"]["state"] == "agent"
    assert again["config"]["handoff_timeout"] == acme.handoff_timeout
    assert [(m["role"], m["text"], m.get("author")) for m in again["history"]] == [
        ("agent", "We're on it.", "Ann Agent")
    ]


async def test_the_bot_stays_silent_during_takeover_and_answers_after_hand_back(acme, ann, fake_openai):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        conversation_id = ready["conversation"]
        await post_as(ann, conversation_id, {"action": "take_over"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "agent"}

        await visitor.send_json_to({"type": "message", "id": "m1", "text": "Are you a person?"})
        ack = await visitor.receive_json_from()
        assert ack["type"] == "ack" and ack["reply_to"] == "m1" and ack["state"] == "agent"
        assert await visitor.receive_nothing(timeout=0.2)  # no start, no delta, no end
        assert fake_openai.requests == []
        stored = await db(list)(Message.objects.filter(conversation_id=conversation_id).values_list("role", "text"))
        assert stored == [("user", "Are you a person?")]

        # Resending the same message while the agent has it stays silent too.
        await visitor.send_json_to({"type": "message", "id": "m1", "text": "Are you a person?"})
        assert (await visitor.receive_json_from())["type"] == "ack"
        assert fake_openai.requests == []

        await post_as(ann, conversation_id, {"action": "hand_back"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "bot"}
        await visitor.send_json_to({"type": "message", "id": "m2", "text": "And now?"})
        frames = await receive_until_end(visitor)
    assert frames[0]["type"] == "start"
    assert frames[-1]["text"] == "You said: And now?"
    assert len(fake_openai.requests) == 1


async def test_the_bot_stays_silent_while_the_visitor_waits_for_a_person(acme, fake_openai):
    async with chat(acme.key) as visitor:
        await connect_and_hello(visitor)
        await visitor.send_json_to({"type": "handoff"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "waiting"}
        await visitor.send_json_to({"type": "message", "id": "m1", "text": "Hello? Anyone?"})
        ack = await visitor.receive_json_from()
        assert (ack["type"], ack["state"]) == ("ack", "waiting")
        assert await visitor.receive_nothing(timeout=0.2)
    assert fake_openai.requests == []


async def test_takeover_stops_a_bot_reply_that_is_streaming(acme, ann, fake_openai):
    fake_openai.queue(openai_reply(["one", " two", " three", " four"], delay=0.5))
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await visitor.send_json_to({"type": "message", "id": "m1", "text": "tell me a long story"})
        assert (await visitor.receive_json_from())["type"] == "start"
        await post_as(ann, ready["conversation"], {"action": "take_over"})
        frames = await receive_until_end(visitor)
        status = await visitor.receive_json_from()
    assert frames[-1]["status"] == "stopped"
    assert status == {"type": "status", "state": "agent"}


async def test_close_ends_the_conversation_and_the_next_message_goes_to_the_bot(acme, ann, fake_openai):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"action": "close"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "closed"}
        await visitor.send_json_to({"type": "message", "id": "m1", "text": "one more thing"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "bot"}
        frames = await receive_until_end(visitor)
    assert frames[-1]["text"] == "You said: one more thing"


async def test_the_visitors_message_during_takeover_reaches_the_agent_page(acme, ann):
    from tests.agents.conftest import agent_socket, next_event

    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"action": "take_over"})
        await visitor.receive_json_from()
        async with agent_socket(f"/ws/agent/conversations/{ready['conversation']}/", ann) as agent_page:
            assert (await agent_page.connect())[0]
            await visitor.send_json_to({"type": "message", "id": "m1", "text": "my order is 1234"})
            event = await next_event(agent_page, "message")
    assert (event["message"]["role"], event["message"]["text"]) == ("user", "my order is 1234")


async def test_an_empty_or_overlong_reply_is_refused_and_nothing_is_sent(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        for text in ("   ", "x" * 8001):
            client = await db(login)(ann)
            response = await db(client.post)(page(ready["conversation"]), {"reply": text}, follow=True)
            assert response.status_code == 200
            assert "Write a reply first" in response.text or "limited to 8,000" in response.text
        assert await visitor.receive_nothing(timeout=0.2)
    assert not await db(Message.objects.filter(conversation_id=ready["conversation"]).exists)()
    assert (await db(Conversation.objects.get)(pk=ready["conversation"])).state == "bot"


async def test_a_reply_without_the_csrf_token_is_refused(acme, ann):
    from django.test import Client

    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        client = Client(enforce_csrf_checks=True)
        await db(client.force_login)(ann)
        response = await db(client.post)(page(ready["conversation"]), {"reply": "forged"})
        assert response.status_code == 403
        assert await visitor.receive_nothing(timeout=0.2)
    assert not await db(Message.objects.filter(conversation_id=ready["conversation"]).exists)()


async def test_a_visitor_message_during_takeover_makes_the_conversation_recently_active(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"action": "take_over"})
        await visitor.receive_json_from()
        before = (await db(Conversation.objects.get)(pk=ready["conversation"])).last_activity
        await visitor.send_json_to({"type": "message", "id": "m1", "text": "still there?"})
        await visitor.receive_json_from()
    after = (await db(Conversation.objects.get)(pk=ready["conversation"])).last_activity
    assert after > before


async def test_the_list_actions_tell_connected_visitors_the_new_state(acme, ann):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"action": "take_over"})
        assert (await visitor.receive_json_from())["state"] == "agent"
        client = await db(login)(ann)
        for action, state in (("hand_back_selected", "bot"), ("close_selected", "closed")):
            data = {"action": action, ACTION_CHECKBOX_NAME: [ready["conversation"]]}
            assert (await db(client.post)("/admin/chat/conversation/", data)).status_code == 302
            assert await visitor.receive_json_from() == {"type": "status", "state": state}


async def test_asking_for_a_person_while_an_agent_has_the_conversation_changes_nothing(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"reply": "Ann here"})
        assert (await visitor.receive_json_from())["state"] == "agent"
        await visitor.receive_json_from()  # Ann's message
        await visitor.send_json_to({"type": "handoff"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "agent"}
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert (conversation.state, conversation.waiting_since) == ("agent", None)


async def test_a_takeover_of_a_waiting_conversation_ends_the_wait(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await visitor.send_json_to({"type": "handoff"})
        await visitor.receive_json_from()
        await post_as(ann, ready["conversation"], {"action": "take_over"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "agent"}
    conversation = await db(Conversation.objects.get)(pk=ready["conversation"])
    assert (conversation.state, conversation.waiting_since) == ("agent", None)


async def test_a_second_agent_joins_without_taking_the_conversation_from_the_first(acme, ann, support_group):
    from tests.agents.conftest import make_agent

    bea = await db(make_agent)("bea", "Bea", "Backup", acme)
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"reply": "Ann here"})
        await post_as(bea, ready["conversation"], {"reply": "Bea here too"})
        frames = [await visitor.receive_json_from() for _ in range(3)]
    assert [f["type"] for f in frames] == ["status", "message", "message"]
    assert [(f["author"], f["text"]) for f in frames[1:]] == [("Ann Agent", "Ann here"), ("Bea Backup", "Bea here too")]
    conversation = await db(Conversation.objects.select_related("assigned_agent").get)(pk=ready["conversation"])
    assert conversation.assigned_agent.username == "ann"


async def test_a_reply_to_a_closed_conversation_reopens_it_for_the_agent(acme, ann, fake_openai):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
        await post_as(ann, ready["conversation"], {"action": "close"})
        assert (await visitor.receive_json_from())["state"] == "closed"
        await post_as(ann, ready["conversation"], {"reply": "One more thing from us"})
        assert await visitor.receive_json_from() == {"type": "status", "state": "agent"}
        assert (await visitor.receive_json_from())["text"] == "One more thing from us"


async def test_a_reply_while_the_visitor_is_away_waits_in_their_history(acme, ann):
    async with chat(acme.key) as visitor:
        ready = await connect_and_hello(visitor)
    response = await post_as(ann, ready["conversation"], {"reply": "Sorry for the wait!"})
    assert response.status_code == 302
    async with chat(acme.key) as visitor:
        again = await connect_and_hello(visitor, ready["visitor"])
    assert again["conversation"] == ready["conversation"]
    assert [(m["role"], m["text"]) for m in again["history"]] == [("agent", "Sorry for the wait!")]


def test_a_reply_is_kept_and_the_agent_warned_when_live_delivery_fails(acme, ann, settings):
    # A real Redis client pointed at a port where nothing listens: the channel layer is down.
    from tests.agents.conftest import conversation_for

    conversation = conversation_for(acme)
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:9/0"]}}
    }
    response = login(ann).post(page(str(conversation.pk)), {"reply": "Are you there?"}, follow=True)
    assert "live delivery failed" in response.text
    assert Message.objects.get(conversation=conversation, role="agent").text == "Are you there?"
