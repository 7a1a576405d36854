"""What a visitor sees when a cap is reached, and how each kind of reply settles its reservation."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.forms.models import model_to_dict

from backend.chat.consumers import ChatConsumer
from backend.chat.models import Message
from backend.quotas.ledger import Totals
from backend.quotas.models import UsageRecord
from tests.conftest import FAKE_KEY, receive_until_end
from tests.fakes.formats import openai_error, openai_reply
from tests.fakes.server import Reply
from tests.quotas.conftest import chat_from, hello, set_quota, totals

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


async def ask(ws, text: str, client_id: str = "c1") -> list[dict]:
    await ws.send_json_to({"type": "message", "id": client_id, "text": text})
    return await receive_until_end(ws)


async def day_counter(site) -> Totals:
    return (await db(totals)(site))["day"]


async def test_a_reached_cap_answers_quota_exceeded_calls_no_provider_and_keeps_the_message(acme, fake_openai):
    await db(set_quota)(acme, daily_token_cap=0, quota_message="We are out of answers today. Email us at help@acme.")
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Where is my parcel?"})
        error = await ws.receive_json_from()
        assert error == {
            "type": "error",
            "code": "quota_exceeded",
            "message": "We are out of answers today. Email us at help@acme.",
            "reply_to": "c1",
        }
        assert await ws.receive_nothing()
    assert fake_openai.requests == []
    kept = await db(Message.objects.get)(client_id="c1")
    assert kept.text == "Where is my parcel?"
    assert not await db(UsageRecord.objects.exists)()


async def test_the_default_quota_text_asks_for_an_email(acme, fake_openai):
    await db(set_quota)(acme, monthly_cost_cap=Decimal(0))
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "hello"})
        error = await ws.receive_json_from()
    assert error["code"] == "quota_exceeded"
    assert "unavailable" in error["message"] and "email" in error["message"]


async def test_a_refused_message_is_answered_when_resent_after_the_cap_is_raised(acme, fake_openai):
    await db(set_quota)(acme, daily_token_cap=0)
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "anyone?"})
        assert (await ws.receive_json_from())["code"] == "quota_exceeded"
        await db(set_quota)(acme, daily_token_cap=None)
        frames = await ask(ws, "anyone?")
    assert frames[-1]["status"] == "complete"
    assert len(fake_openai.requests) == 1
    assert await db(Message.objects.filter(role="user").count)() == 1


async def test_the_reply_is_asked_for_fewer_tokens_when_less_remains(acme, fake_openai):
    # The first prompt holds at most ~240 tokens; 300 leaves room for a reply well under the site's 512.
    await db(set_quota)(acme, daily_token_cap=300)
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ask(ws, "short one")
    sent = fake_openai.requests[0].json()["max_tokens"]
    assert 32 <= sent < acme.max_reply_tokens


async def test_a_complete_reply_settles_to_what_the_provider_billed(acme, fake_openai):
    fake_openai.queue(openai_reply(["Hi", " there"], usage=(1000, 500)))
    async with chat_from(acme.key) as ws:
        ready = await hello(ws)
        frames = await ask(ws, "hello")
    reply = await db(Message.objects.get)(id=frames[-1]["message"])
    record = await db(UsageRecord.objects.get)()
    assert str(record.conversation_id) == ready["conversation"]
    assert (record.provider, record.model, record.status) == ("openai", "gpt-4o-mini", "complete")
    assert (record.input_tokens, record.output_tokens, record.usage_estimated) == (1000, 500, False)
    assert record.cost == reply.cost == Decimal("0.000450")
    assert record.latency_ms is not None and record.first_token_ms is not None
    day = await day_counter(acme)
    assert (day.tokens, day.cost, day.reserved_tokens, day.reserved_cost_micros) == (1500, Decimal("0.000450"), 0, 0)
    # The ledger holds no key, and no message text.
    stored = json.dumps(await db(lambda: [model_to_dict(r) for r in UsageRecord.objects.all()])(), default=str)
    assert FAKE_KEY not in stored and "hello" not in stored


async def test_a_stopped_reply_settles_its_estimated_usage(acme, fake_openai):
    fake_openai.queue(openai_reply(["Part", " one", " two", " three", " four", " five"], delay=0.3))
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "tell me a long story"})
        await ws.receive_json_from()  # start
        await ws.receive_json_from()  # first delta
        await ws.send_json_to({"type": "stop"})
        frames = await receive_until_end(ws)
    assert frames[-1]["status"] == "stopped"
    record = await db(UsageRecord.objects.get)()
    assert record.status == "stopped" and record.usage_estimated
    assert record.input_tokens > 0 and record.output_tokens > 0 and record.cost > 0
    day = await day_counter(acme)
    assert day.tokens == record.input_tokens + record.output_tokens and day.reserved_tokens == 0
    assert day.cost == record.cost


async def test_a_reply_stopped_before_it_ever_ran_gives_back_its_hold_and_keeps_the_message(
    acme, fake_openai, monkeypatch
):
    """A disconnect, a SIGTERM or an agent's takeover can cancel the reply task before its first step, which
    then runs none of its code; the hold reserved for it must not count against the caps until it expires."""
    original = ChatConsumer.on_message

    async def message_then_stop_at_once(self, frame: dict) -> None:
        await original(self, frame)
        await self.finish_reply()  # with no await between: the reply task has not started

    monkeypatch.setattr(ChatConsumer, "on_message", message_then_stop_at_once)
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Are you there?"})
        assert await ws.receive_nothing(timeout=0.3)  # no reply was started, so no frame
    assert fake_openai.requests == []
    day = await day_counter(acme)
    assert (day.tokens, day.reserved_tokens, day.reserved_cost_micros) == (0, 0, 0)
    assert await db(Message.objects.filter(client_id="c1", role="user").exists)()


async def test_a_reply_that_fails_before_any_text_bills_nothing_and_frees_its_hold(acme, fake_openai):
    fake_openai.queue(openai_error(500, "The server had an error", "server_error"))
    async with chat_from(acme.key) as ws:
        await hello(ws)
        frames = await ask(ws, "hello")
    assert frames[-1]["status"] == "error"
    record = await db(UsageRecord.objects.get)()
    assert (record.status, record.input_tokens, record.output_tokens, record.cost) == ("error", 0, 0, Decimal(0))
    day = await day_counter(acme)
    assert (day.tokens, day.cost_micros, day.reserved_tokens, day.reserved_cost_micros) == (0, 0, 0, 0)


async def test_a_reply_cut_mid_stream_bills_the_estimate_of_what_was_used(acme, fake_openai):
    fake_openai.queue(Reply(pieces=openai_reply(["Half", " an", " answer", " and", " more"]).pieces, cut_after=4))
    async with chat_from(acme.key) as ws:
        await hello(ws)
        frames = await ask(ws, "hello")
    assert frames[-1]["status"] == "error" and frames[-1]["text"] == "Half an"
    record = await db(UsageRecord.objects.get)()
    assert record.status == "error" and record.usage_estimated
    assert record.output_tokens == 2 and record.input_tokens > 0  # "Half an" is about two tokens
    assert (await day_counter(acme)).reserved_tokens == 0


async def test_only_the_sites_number_of_earlier_messages_is_sent(acme, fake_openai):
    await db(set_quota)(acme, max_history_messages=3)
    async with chat_from(acme.key) as ws:
        await hello(ws)
        for n in range(3):
            await ask(ws, f"question {n}", f"c{n}")
    messages = fake_openai.requests[-1].json()["messages"]
    assert [m["content"] for m in messages[1:]] == ["question 1", "You said: question 1", "question 2"]
