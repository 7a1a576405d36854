"""The reply's quota is reserved in the reply claim's Redis script, for the prompt the connection expects; the
history read then checks the guess, and a hold that is not the reservation is given back.

Runs when REDIS_URL is set (the services run, `make test-services`): the claim and the ledger are Redis's.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.connection import AbstractConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.chat import services
from backend.chat.models import Conversation, Message
from backend.ops import claims
from backend.quotas import ledger
from backend.quotas.models import UsageRecord
from backend.quotas.services import MESSAGE_OVERHEAD_TOKENS
from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.quotas.conftest import set_quota, totals

pytestmark = [
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL (run `make test-services`)"),
    pytest.mark.django_db(transaction=True),
]

db = database_sync_to_async


@pytest.fixture(autouse=True)
def redis_ledger(settings, own_quota_keys):
    settings.QUOTA_LEDGER = "redis"


@pytest.fixture
def scripts_run(monkeypatch) -> list[str]:
    """The Lua scripts redis-py sends (EVALSHA), in order; other commands, such as its health checks, are left out."""
    sent: list[str] = []
    original, original_async = AbstractConnection.send_command, AsyncConnection.send_command

    def recording(self, *args, **kwargs):
        if args[0] in ("EVALSHA", "EVAL"):
            sent.append(args[1])
        return original(self, *args, **kwargs)

    async def recording_async(self, *args, **kwargs):
        if args[0] in ("EVALSHA", "EVAL"):
            sent.append(args[1])
        return await original_async(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_command", recording)
    monkeypatch.setattr(AsyncConnection, "send_command", recording_async)
    return sent


async def held_now(site) -> int:
    parts = await db(totals)(site)
    return parts["day"].reserved_tokens + parts["month"].reserved_tokens


async def ask(ws, client_id: str, text: str = "Hello?") -> list[dict]:
    await ws.send_json_to({"type": "message", "id": client_id, "text": text})
    return await receive_until_end(ws)


async def test_the_claim_the_rate_limits_and_the_reservation_take_one_round_trip_before_the_call(
    acme, fake_openai, scripts_run
):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")  # the day's first reply also copies the day's totals into Redis
        scripts_run.clear()
        await ws.send_json_to({"type": "message", "id": "c2", "text": "Where is my order?"})
        assert (await ws.receive_json_from())["type"] == "start"
        before_the_call = list(scripts_run)
        frames = await receive_until_end(ws)
    assert len(before_the_call) == 1, before_the_call
    assert frames[-1]["status"] == "complete"
    # The hold made in the claim's script is the one the reply settled: nothing is left held.
    record = await db(UsageRecord.objects.latest)("created")
    assert record.hold is not None and record.input_tokens > 0
    assert await held_now(acme) == 0


async def test_a_guess_that_fell_short_is_given_back_and_the_real_prompt_reserved(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")
        # Another writer lengthens the conversation: the connection's guess does not know of it.
        conversation = await db(Conversation.objects.get)()
        long_text = "An agent's long note. " * 200
        await db(Message.objects.create)(conversation=conversation, role="agent", author="Ann", text=long_text)
        frames = await ask(ws, "c2")
    assert frames[-1]["status"] == "complete"
    sent = fake_openai.requests[-1].json()["messages"]
    assert any(long_text in m["content"] for m in sent)
    bound = sum(len(m["content"].encode()) for m in sent) + MESSAGE_OVERHEAD_TOKENS * (len(sent) + 1)
    record = await db(UsageRecord.objects.latest)("created")
    hold = await db(ledger.current().load)(record.hold)
    assert hold.tokens >= bound + hold.max_reply_tokens  # the hold covered the prompt that was sent
    assert await held_now(acme) == 0  # and the guessed hold was given back


async def test_holds_for_messages_that_get_no_call_are_given_back(acme, fake_openai):
    await db(set_quota)(acme, visitor_messages_per_minute=2)
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        first = await ask(ws, "c1")
        replayed = await ask(ws, "c1")  # a resend: answered from storage
        assert [f["type"] for f in replayed] == ["start", "end"] and replayed[0]["message"] == first[0]["message"]
        assert await held_now(acme) == 0
        await ws.send_json_to({"type": "message", "id": "c2", "text": "And now?"})  # the third this minute
        refused = await ws.receive_json_from()
        assert refused["code"] == "rate_limited"
        assert await held_now(acme) == 0
    assert len(fake_openai.requests) == 1


async def test_a_reply_to_the_history_expected_starts_without_a_second_trip_to_a_worker_thread(
    acme, fake_openai, monkeypatch
):
    """The read's trip is the only one before the call when it gives the turns the connection expected; a
    conversation changed by someone else goes through prepare_reply, which also reserves for the real prompt."""
    decided: list[str] = []
    real = services.prepare_reply

    def prepare_reply(conversation, client_id, *args):
        decided.append(client_id)
        return real(conversation, client_id, *args)

    monkeypatch.setattr(services, "prepare_reply", prepare_reply)
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")  # the day's first reply copies the day's totals into Redis: no hold in the claim
        await ask(ws, "c2")
        conversation = await db(Conversation.objects.get)()
        await db(Message.objects.create)(conversation=conversation, role="agent", author="Ann", text="Hi, Ann here.")
        frames = await ask(ws, "c3")
        await ask(ws, "c4")
    assert decided == ["c1", "c3"]
    assert frames[-1]["status"] == "complete"
    sent = fake_openai.requests[-2].json()["messages"]
    assert any(m["content"] == "Hi, Ann here." for m in sent)
    assert await held_now(acme) == 0


async def test_a_claim_whose_answer_was_lost_keeps_neither_the_message_nor_the_quota_waiting(
    acme, fake_openai, monkeypatch
):
    """Redis took the claim and the hold, but its answer was lost (a timeout): the visitor is told `unavailable`,
    the message sent again from a new connection is answered, not kept waiting for a claim nobody answers
    for, and no hold is left counting against the caps."""
    real_run_once, lost = claims._run_once, []

    async def answer_lost(script, keys, args):
        answer = await real_run_once(script, keys, args)
        if len(keys) > 4 and not lost:  # the claim with a hold, once
            lost.append(keys)
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        return answer

    async with chat(acme.key) as ws:
        ready = await connect_and_hello(ws)
        await ask(ws, "c1")  # the day's first reply copies the day's totals into Redis: no hold in the claim
        monkeypatch.setattr(claims, "_run_once", answer_lost)
        await ws.send_json_to({"type": "message", "id": "c2", "text": "Are you there?"})
        refused = await ws.receive_json_from()
    assert lost and (refused["type"], refused["code"], refused["reply_to"]) == ("error", "unavailable", "c2")
    assert await held_now(acme) == 0
    async with chat(acme.key) as again:
        await connect_and_hello(again, ready["visitor"])
        frames = await ask(again, "c2", "Are you there?")
    assert [f["type"] for f in frames][0] == "start" and frames[-1]["status"] == "complete"
    assert len(fake_openai.requests) == 2 and await held_now(acme) == 0
