"""With Redis, a connection's message starts its reply from the history the connection read last, and the read
that confirms it runs beside the call (consumers.HistoryCheck). When the read disagrees, the request is
withdrawn before anything of it reaches the visitor, and the message is answered from what was read."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError

from backend.chat import services
from backend.chat.config import stamp_key
from backend.chat.models import Message
from backend.ops import claims
from backend.ops.redis_client import redis_client
from backend.quotas.models import UsageRecord
from tests.conftest import chat, connect_and_hello, receive_until_end

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (run `make test-services`)"),
]


def stored() -> list[tuple[str, str, str]]:
    return list(Message.objects.order_by("created").values_list("role", "text", "status"))


def usage() -> list[tuple[str, bool]]:
    """Each counted call's status, and whether it had a reply's tokens."""
    return [
        (status, tokens > 0)
        for status, tokens in UsageRecord.objects.order_by("created").values_list("status", "output_tokens")
    ]


def sent_texts(request) -> list[str]:
    return [m["content"] for m in json.loads(request.body)["messages"] if m["role"] != "system"]


async def ask(ws, client_id: str, text: str) -> list[dict]:
    await ws.send_json_to({"type": "message", "id": client_id, "text": text})
    return await receive_until_end(ws, timeout=10)


async def test_a_guess_the_read_does_not_confirm_is_withdrawn_and_the_message_answered_from_the_read(acme, fake_openai):
    """The second tab read the conversation before the first tab's exchange: its guess misses two turns."""
    async with chat(acme.key) as first, chat(acme.key) as second:
        ready = await connect_and_hello(first)
        await connect_and_hello(second, ready["visitor"])
        await ask(first, "m1", "Hello?")
        frames = await ask(second, "m2", "Do you ship to Norway?")
        # The answer's own read gave the tab the turns: its next guess is right.
        again = await ask(second, "m3", "Thanks!")
    types = [f["type"] for f in frames]
    assert types[0] == "start" and types.count("start") == 1 and "error" not in types
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "You said: Do you ship to Norway?"
    assert again[-1]["text"] == "You said: Thanks!"
    final = [r for r in fake_openai.requests if sent_texts(r)[-1] == "Do you ship to Norway?"][-1]
    assert sent_texts(final) == ["Hello?", "You said: Hello?", "Do you ship to Norway?"]
    rows = await database_sync_to_async(stored)()
    assert [text for _, text, _ in rows] == [
        "Hello?",
        "You said: Hello?",
        "Do you ship to Norway?",
        "You said: Do you ship to Norway?",
        "Thanks!",
        "You said: Thanks!",
    ]
    # The withdrawn call counts against the quota as a stopped one with no reply: the provider may bill its
    # prompt. Each message's reply is counted once.
    assert await database_sync_to_async(usage)() == [
        ("complete", True),
        ("stopped", False),
        ("complete", True),
        ("complete", True),
    ]


async def test_a_resend_of_a_message_answered_long_ago_replays_its_reply(acme, fake_openai):
    """The claim's release mark has expired, so nothing before the call says the message was answered: the
    read beside the call does, and the stored reply is replayed instead of a second one."""
    async with chat(acme.key) as first, chat(acme.key) as second:
        ready = await connect_and_hello(first)
        await connect_and_hello(second, ready["visitor"])
        answered = await ask(first, "m1", "Hello?")
        mark = claims._released_key(claims._key(ready["conversation"], "m1"))
        assert redis_client().delete(mark) == 1
        replayed = await ask(second, "m1", "Hello?")
    assert [f["type"] for f in replayed] == ["start", "end"]
    assert replayed[0]["message"] == answered[0]["message"] and replayed[-1]["text"] == "You said: Hello?"
    assert await database_sync_to_async(stored)() == [
        ("user", "Hello?", "complete"),
        ("assistant", "You said: Hello?", "complete"),
    ]
    assert await database_sync_to_async(usage)() == [("complete", True), ("stopped", False)]


async def test_a_resend_answered_lately_reads_before_calling(acme, fake_openai):
    async with chat(acme.key) as first, chat(acme.key) as second:
        ready = await connect_and_hello(first)
        await connect_and_hello(second, ready["visitor"])
        answered = await ask(first, "m1", "Hello?")
        replayed = await ask(second, "m1", "Hello?")
    assert replayed[0]["message"] == answered[0]["message"] and replayed[-1]["text"] == "You said: Hello?"
    assert len(fake_openai.requests) == 1
    assert await database_sync_to_async(usage)() == [("complete", True)]


async def test_a_stop_while_a_withdrawn_guess_is_read_ends_the_reply_and_keeps_the_message(
    acme, fake_openai, monkeypatch
):
    real_read = services.read_history

    def slow_read(conversation, client_id):
        if client_id == "m2":
            time.sleep(0.3)  # the stop arrives meanwhile
        return real_read(conversation, client_id)

    monkeypatch.setattr(services, "read_history", slow_read)
    async with chat(acme.key) as first, chat(acme.key) as second:
        ready = await connect_and_hello(first)
        await connect_and_hello(second, ready["visitor"])
        await ask(first, "m1", "Hello?")
        await second.send_json_to({"type": "message", "id": "m2", "text": "Wait"})
        await asyncio.sleep(0.1)
        await second.send_json_to({"type": "stop"})
        frames = await receive_until_end(second, timeout=10)
    assert [f["type"] for f in frames] == ["start", "end"] and frames[-1]["status"] == "stopped"
    assert await database_sync_to_async(stored)() == [
        ("user", "Hello?", "complete"),
        ("assistant", "You said: Hello?", "complete"),
        ("user", "Wait", "complete"),
    ]


async def test_when_the_read_beside_the_call_fails_the_visitor_is_told_and_nothing_is_half_stored(
    acme, fake_openai, monkeypatch
):
    real_read = services.read_history
    failing = {"m1"}

    def read(conversation, client_id):
        if client_id in failing:
            failing.discard(client_id)
            raise OperationalError("the database went away")
        return real_read(conversation, client_id)

    monkeypatch.setattr(services, "read_history", read)
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "m1", "text": "Hello?"})
        error = await ws.receive_json_from(timeout=10)
        assert (error["type"], error["code"], error["reply_to"]) == ("error", "unavailable", "m1")
        assert await ws.receive_nothing(timeout=0.2)
        assert await database_sync_to_async(stored)() == []
        # The resend is answered, once.
        frames = await ask(ws, "m1", "Hello?")
    assert frames[-1]["text"] == "You said: Hello?"
    assert await database_sync_to_async(stored)() == [
        ("user", "Hello?", "complete"),
        ("assistant", "You said: Hello?", "complete"),
    ]


@pytest.mark.parametrize(("ledger", "written"), [("redis", True), ("database", False)])
async def test_only_the_redis_ledger_keeps_the_sites_stamp_in_redis(acme, fake_openai, settings, ledger, written):
    """The stamp is for the claim's script to compare before a guessed call, which only the Redis ledger makes;
    with the database ledger a chat has no reason to write it."""
    settings.QUOTA_LEDGER = ledger
    key = stamp_key(acme.pk)
    redis_client().delete(key)  # the fixture's save wrote it
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        frames = await ask(ws, "m1", "Hello?")
    assert frames[-1]["type"] == "end"
    assert (redis_client().get(key) is not None) is written
