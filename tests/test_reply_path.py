"""Between a visitor's message and the provider call only the claim, the duplicate check and the reservation
happen; the message itself is stored beside the call (issue 9), and is never lost when that fails."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from backend.chat import services
from backend.chat.config import load_reply_config
from backend.chat.models import Conversation, Message, Visitor, hash_token, new_visitor_token
from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.fakes.formats import openai_reply

db = database_sync_to_async


@pytest.mark.django_db
def test_the_trip_before_the_call_reads_once_and_stores_nothing_but_the_reservation(acme, fake_openai):
    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    conversation = Conversation.objects.create(site=acme, visitor=visitor)
    known = load_reply_config(acme.pk)
    with CaptureQueriesContext(connection) as queries:
        prepared = services.prepare_reply(conversation, "c1", "Where is my order?", known)
    statements = [q["sql"].strip() for q in queries if q["sql"].split()[0] in ("SELECT", "INSERT", "UPDATE", "DELETE")]
    chat_queries = [sql for sql in statements if "quotas_" not in sql.split(" WHERE ")[0]]
    assert len(chat_queries) == 1, chat_queries  # history, state, stamp, has-passages and the duplicate check
    assert prepared.starts_now and not prepared.saved
    assert [(t.role, t.content) for t in prepared.turns] == [("user", "Where is my order?")]
    assert not Message.objects.exists()  # the consumer stores it beside the call


@pytest.mark.django_db
def test_a_refused_message_is_stored_in_the_trip(acme, fake_openai):
    from backend.quotas.models import SiteQuota

    SiteQuota.objects.update_or_create(site=acme, defaults={"daily_token_cap": 1})
    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    conversation = Conversation.objects.create(site=acme, visitor=visitor)
    prepared = services.prepare_reply(conversation, "c1", "Hello?", load_reply_config(acme.pk))
    assert not prepared.starts_now and prepared.saved
    assert list(Message.objects.values_list("text", flat=True)) == ["Hello?"]


@pytest.mark.django_db(transaction=True)
async def test_the_message_is_stored_while_a_slow_provider_thinks(acme, fake_openai):
    """Stored after the first token normally (so it never delays it), but not later than a moment while the
    provider has not answered: agents see the question at once."""
    fake_openai.queue(openai_reply(["Slow", " answer"], delay=1.0))  # the text comes a second after the headers
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hi"})
        start = await ws.receive_json_from()
        assert start["type"] == "start"
        stored = []
        for _ in range(500):  # the consumer runs in this event loop: wait without blocking it
            stored = await db(lambda: list(Message.objects.values_list("role", "text")))()
            if stored:
                break
            await asyncio.sleep(0.01)
        # The provider is still thinking: no text yet, no reply stored; the question is.
        assert await ws.receive_nothing(timeout=0.05)
        assert stored == [("user", "Hi")]
        frames = await receive_until_end(ws, timeout=10)
        assert frames[0]["type"] == "delta" and frames[-1]["text"] == "Slow answer"


@pytest.mark.django_db(transaction=True)
async def test_a_message_whose_reply_is_stopped_at_once_is_still_stored(acme, fake_openai):
    fake_openai.queue(openai_reply(["Never", " seen"], delay=5.0))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hi"})
        await ws.send_json_to({"type": "stop"})  # read at once: the message handler does not wait for the store
        frames = await receive_until_end(ws, timeout=10)
    assert frames[-1]["status"] == "stopped"
    rows = await db(lambda: list(Message.objects.order_by("created").values_list("role", "text", "status")))()
    assert rows == [("user", "Hi", "complete"), ("assistant", "", "stopped")]


@pytest.mark.django_db(transaction=True)
async def test_when_storing_beside_the_call_fails_the_message_is_stored_with_its_reply(
    acme, fake_openai, monkeypatch, caplog
):
    real = services.store_visitor_message
    failures = []

    def refuse_once(message: Message) -> None:
        if not failures:
            failures.append(message.client_id)
            raise OperationalError("the database went away")
        real(message)

    monkeypatch.setattr(services, "store_visitor_message", refuse_once)
    fake_openai.queue(openai_reply(["Still", " answered"]))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hi"})
        frames = [await ws.receive_json_from()]
        while frames[-1]["type"] != "end":
            frames.append(await ws.receive_json_from())
    assert failures == ["c1"]
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "Still answered"
    assert not [f for f in frames if f["type"] == "error"]
    rows = await db(lambda: list(Message.objects.order_by("created").values_list("role", "text", "reply_to__text")))()
    assert rows == [("user", "Hi", None), ("assistant", "Still answered", "Hi")]
    assert "saved with its reply" in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_a_frame_reaches_its_handler_without_a_hop_to_the_shared_sync_thread(acme, fake_openai, sync_thread_hops):
    """channels' own dispatch sends every frame through the shared sync thread first (to clean that thread's
    database connections); the chat socket's database work cleans its own, so its frames skip that hop."""
    fake_openai.queue(openai_reply(["Hello", " there"]))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hi"})
        frames = await receive_until_end(ws)
    assert frames[-1]["text"] == "Hello there"
    assert sync_thread_hops == []


@pytest.mark.django_db(transaction=True)
async def test_a_replys_frames_carry_its_characters_as_they_are(acme, fake_openai):
    # Not \u-escaped: a reply in Japanese or with accents costs the visitor its own bytes, not six per character.
    fake_openai.queue(openai_reply(["Grüße, ", "日本"]))
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hallo"})
        raw = []
        while not raw or '"type":"end"' not in raw[-1]:
            raw.append((await ws.receive_output(5))["text"])
    deltas = [frame for frame in raw if frame.startswith('{"type":"delta"')]
    assert "".join(json.loads(frame)["text"] for frame in deltas) == "Grüße, 日本"
    assert '"text":"Grüße, 日本"' in raw[-1] and "\\u" not in "".join(raw)
