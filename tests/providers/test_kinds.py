"""Every provider kind answers a visitor end to end, through the consumer, against a fake of its wire format."""

from __future__ import annotations

from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Message
from tests.conftest import FAKE_KEY, chat, connect_and_hello, receive_until_end
from tests.fakes.formats import anthropic_reply, gemini_reply, ollama_reply, openai_reply
from tests.providers.conftest import ANTHROPIC_KEY, GEMINI_KEY, amake_site, spec_for

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async

SYSTEM = "You are Acme's support assistant."


async def converse(site, *texts: str) -> list[list[dict]]:
    replies = []
    async with chat(site.key) as ws:
        await connect_and_hello(ws)
        for number, text in enumerate(texts):
            await ws.send_json_to({"type": "message", "id": f"c{number}", "text": text})
            replies.append(await receive_until_end(ws))
    return replies


async def site_for(kind, servers, name="Acme", **overrides):
    site = await amake_site(spec_for(kind, servers[kind], **overrides), name=name)
    site.system_prompt = SYSTEM
    await db(site.save)()
    return site


@pytest.mark.parametrize("kind", ["openai", "mistral", "deepseek", "lmstudio", "ollama", "anthropic", "gemini"])
async def test_each_kind_streams_a_reply_and_stores_who_answered(kind, servers):
    site = await site_for(kind, servers)
    [frames] = await converse(site, "Where is my parcel?")
    start, *deltas, end = frames
    assert len(deltas) >= 3 and all(d["type"] == "delta" for d in deltas)
    assert end["status"] == "complete" and end["text"] == "You said: Where is my parcel?"
    reply = await db(Message.objects.get)(id=start["message"])
    default_model = {
        "openai": "gpt-4o-mini",
        "mistral": "mistral-small-latest",
        "deepseek": "deepseek-chat",
        "lmstudio": "local-model",
        "ollama": "llama3.2",
        "anthropic": "claude-haiku-4-5",
        "gemini": "gemini-2.5-flash",
    }[kind]
    assert (reply.provider, reply.model, reply.attempts) == (kind, default_model, 1)
    assert reply.output_tokens == len(deltas) and reply.input_tokens > 0 and not reply.usage_estimated


async def test_chat_completions_kinds_send_bearer_keys_and_system_as_the_first_message(servers):
    for kind, path in [("mistral", "/v1/chat/completions"), ("deepseek", "/chat/completions")]:
        site = await site_for(kind, servers, name=kind)
        await converse(site, "hi")
        sent = servers[kind].requests[-1]
        body = sent.json()
        assert sent.path == path
        assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert body["max_tokens"] == site.max_reply_tokens and body["stream"] is True


async def test_lmstudio_needs_no_key_and_sends_no_authorization(servers):
    site = await site_for("lmstudio", servers)
    await converse(site, "hi")
    assert "authorization" not in servers["lmstudio"].requests[0].headers


async def test_anthropic_gets_the_system_prompt_top_level_and_its_own_headers(servers):
    site = await site_for("anthropic", servers)
    await converse(site, "first", "second")
    sent = servers["anthropic"].requests[-1]
    body = sent.json()
    assert sent.method == "POST" and sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert body["system"] == SYSTEM and body["stream"] is True
    assert body["max_tokens"] == site.max_reply_tokens
    assert body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": "second"},
    ]


async def test_gemini_gets_system_instruction_role_model_and_the_key_header(servers):
    site = await site_for("gemini", servers)
    await converse(site, "first", "second")
    sent = servers["gemini"].requests[-1]
    body = sent.json()
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY and "authorization" not in sent.headers
    assert body["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "You said: first"}]},
        {"role": "user", "parts": [{"text": "second"}]},
    ]
    assert body["generationConfig"] == {"maxOutputTokens": site.max_reply_tokens}


async def test_ollama_gets_its_native_chat_body_with_num_predict(servers):
    site = await site_for("ollama", servers)
    await converse(site, "hello")
    sent = servers["ollama"].requests[0]
    body = sent.json()
    assert sent.path == "/api/chat" and "authorization" not in sent.headers
    assert body["stream"] is True and body["options"] == {"num_predict": site.max_reply_tokens}
    assert body["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("kind", "model", "reply", "expected_cost"),
    [
        # gpt-4o-mini 0.15 / 0.60 per million
        ("openai", "gpt-4o-mini", openai_reply(["Hi", "!"], usage=(1000, 500)), Decimal("0.000450")),
        # Mistral puts usage on the finish chunk; mistral-small-latest 0.10 / 0.30
        (
            "mistral",
            "mistral-small-latest",
            openai_reply(["Hi", "!"], usage=(1000, 500), usage_on_finish=True),
            Decimal("0.000250"),
        ),
        # deepseek-chat 0.27 / 1.10
        ("deepseek", "deepseek-chat", openai_reply(["Hi", "!"], usage=(1000, 500)), Decimal("0.000820")),
        # claude-sonnet-4-6 3 / 15
        ("anthropic", "claude-sonnet-4-6", anthropic_reply(["Hi", "!"], usage=(1000, 500)), Decimal("0.010500")),
        # gemini-2.5-flash 0.30 / 2.50, thinking tokens billed as output: 500 + 300
        ("gemini", "gemini-2.5-flash", gemini_reply(["Hi", "!"], usage=(1000, 500), thoughts=300), Decimal("0.002300")),
        # local models cost nothing
        ("ollama", "llama3.2", ollama_reply(["Hi", "!"], usage=(1000, 500)), Decimal("0")),
        ("lmstudio", "local-model", openai_reply(["Hi", "!"], usage=(1000, 500)), Decimal("0")),
    ],
)
async def test_usage_and_cost_are_stored_for_every_kind(servers, kind, model, reply, expected_cost):
    servers[kind].queue(reply)
    site = await site_for(kind, servers, model=model)
    [frames] = await converse(site, "hello")
    stored = await db(Message.objects.get)(id=frames[-1]["message"])
    output = 800 if kind == "gemini" else 500
    assert (stored.input_tokens, stored.output_tokens, stored.usage_estimated) == (1000, output, False)
    assert stored.cost == expected_cost and stored.model == model


async def test_ollama_without_prompt_eval_count_stores_an_estimated_input(servers):
    servers["ollama"].queue(ollama_reply(["Hi", " there"], usage=(None, 2)))
    site = await site_for("ollama", servers)
    [frames] = await converse(site, "hello again")
    stored = await db(Message.objects.get)(id=frames[-1]["message"])
    assert stored.usage_estimated
    assert stored.output_tokens == 2  # eval_count is still Ollama's own count
    assert stored.input_tokens > 0  # estimated from the prompt, not left at zero


async def test_a_provider_that_reports_no_usage_gets_an_estimate_flagged_as_such(servers):
    servers["openai"].queue(openai_reply(["A", " reply", " without", " usage"], usage=None))
    site = await site_for("openai", servers)
    [frames] = await converse(site, "hello")
    stored = await db(Message.objects.get)(id=frames[-1]["message"])
    assert stored.usage_estimated and stored.input_tokens > 0 and stored.output_tokens > 0
    assert stored.cost > 0


async def test_visitors_are_answered_by_the_chat_chain_never_the_summary_chain(servers):
    site = await amake_site(
        spec_for("gemini", servers["gemini"], purpose="summary"), spec_for("anthropic", servers["anthropic"])
    )
    [frames] = await converse(site, "hello")
    assert (await db(Message.objects.get)(id=frames[-1]["message"])).provider == "anthropic"
    assert servers["gemini"].requests == []
