"""The offline answerer `kb`: the best passage with its link, or an honest "I don't know" and a person."""

from __future__ import annotations

from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Message
from backend.kb.answerer import DONT_KNOW, SCHEME, chunks, stream
from backend.providers.base import ChatMessage, ChatRequest, Endpoint, ProviderError, StreamEnd
from backend.providers.models import ProviderConfig
from tests.conftest import chat, connect_and_hello, receive_until_end

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
EMBED_URL = "https://help.parley.example/help/embedding-the-widget/"


async def ask(site, text: str, client_id: str = "c1") -> list[dict]:
    async with chat(site.key) as ws:
        ready = await connect_and_hello(ws)
        assert ready["config"]["available"] is True
        await ws.send_json_to({"type": "message", "id": client_id, "text": text})
        return await receive_until_end(ws)


async def test_it_answers_how_to_embed_the_widget_with_the_article_and_its_link(docs):
    frames = await ask(docs, "how do I embed the widget?")
    deltas = [f["text"] for f in frames if f["type"] == "delta"]
    end = frames[-1]
    assert end["status"] == "complete"
    assert len(deltas) > 5, "streamed a few words at a time"
    assert all(len(d.split()) <= 3 for d in deltas)
    assert "".join(deltas) == end["text"]
    assert '<script src="https://SERVER/widget.js" data-site="SITE_KEY" async></script>' in end["text"]
    assert end["text"].endswith(f"Source: [Embedding the chat widget on your website]({EMBED_URL})")
    assert end["sources"] == [{"title": "Embedding the chat widget on your website", "url": EMBED_URL}]


async def test_its_replies_cost_nothing_and_count_no_tokens(docs):
    frames = await ask(docs, "How are webhook requests signed?")
    reply = await db(Message.objects.get)(id=frames[-1]["message"])
    assert reply.provider == "kb"
    assert (reply.input_tokens, reply.output_tokens, reply.usage_estimated) == (0, 0, False)
    assert reply.cost == Decimal(0)
    assert "**Signed requests**" in reply.text
    assert reply.sources == [
        {"title": "Webhooks and the tickets API", "url": "https://help.parley.example/help/webhooks/"}
    ]


@pytest.mark.parametrize(
    "question", ["What's the weather in Paris tomorrow?", "Do you sell shoes in size 44?", "Give me a recipe"]
)
async def test_an_off_topic_question_gets_the_dont_know_answer_offering_a_person(docs, question):
    frames = await ask(docs, question)
    end = frames[-1]
    assert end["status"] == "complete"
    assert end["text"] == DONT_KNOW
    assert "person" in end["text"]
    assert "sources" not in end
    reply = await db(Message.objects.get)(id=end["message"])
    assert reply.sources == []


async def test_it_answers_the_latest_question_of_the_conversation(docs):
    async with chat(docs.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "1", "text": "How do I deploy to production?"})
        first = await receive_until_end(ws)
        await ws.send_json_to({"type": "message", "id": "2", "text": "and how are webhook requests signed?"})
        second = await receive_until_end(ws)
    assert first[-1]["sources"][0]["title"] == "Deploying Parley to production"
    assert second[-1]["sources"][0]["title"] == "Webhooks and the tickets API"


async def test_a_site_without_articles_gets_the_dont_know_answer(prices):
    from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
    from tests.conftest import ACME_ORIGIN

    empty = await db(create_site)(SiteSpec(name="Empty", origins=[ACME_ORIGIN], providers=[ProviderSpec(kind="kb")]))
    frames = await ask(empty, "how do I embed the widget?")
    assert frames[-1]["text"] == DONT_KNOW


async def test_it_never_answers_from_another_sites_articles(docs, prices):
    from backend.sites.provisioning import ProviderSpec, SiteSpec, create_site
    from tests.conftest import ACME_ORIGIN

    other = await db(create_site)(SiteSpec(name="Other", origins=[ACME_ORIGIN], providers=[ProviderSpec(kind="kb")]))
    frames = await ask(other, "how do I embed the widget?")
    assert frames[-1]["text"] == DONT_KNOW


async def test_the_kb_provider_needs_no_key_and_knows_its_site(docs):
    config = await db(ProviderConfig.objects.get)(site=docs)
    assert config.api_key == ""
    from backend.chat.services import chat_endpoints

    (endpoint,) = await db(chat_endpoints)(docs)
    assert (endpoint.kind, endpoint.protocol, endpoint.base_url) == ("kb", "kb", SCHEME + docs.key)


async def test_without_a_site_the_adapter_fails_like_a_provider():
    endpoint = Endpoint(kind="kb", protocol="kb", base_url="kb://", model="best-passage")
    request = ChatRequest(system="", messages=[ChatMessage("user", "hi")], max_tokens=100)
    with pytest.raises(ProviderError, match="no site"):
        async for _ in stream(endpoint, request):
            pass


async def test_the_adapter_streams_text_then_a_free_stream_end(docs):
    endpoint = Endpoint(kind="kb", protocol="kb", base_url=SCHEME + docs.key, model="best-passage")
    request = ChatRequest(
        system="ignored",
        messages=[
            ChatMessage("user", "old question"),
            ChatMessage("assistant", "x"),
            ChatMessage("user", "rate limits"),
        ],
        max_tokens=16,
    )
    items = [item async for item in stream(endpoint, request)]
    *texts, end = items
    assert all(isinstance(t, str) for t in texts)
    assert isinstance(end, StreamEnd)
    assert (end.finish_reason, end.input_tokens, end.output_tokens, end.usage_estimated) == ("stop", 0, 0, False)
    assert end.sources == [
        {"title": "Quotas, budgets and rate limits", "url": "https://help.parley.example/help/quotas/"}
    ]


def test_chunks_keep_every_character_and_hold_a_few_words():
    text = "  Paste this:\n\n```html\n<script src=x></script>\n```  \nDone. "
    pieces = chunks(text)
    assert "".join(pieces) == text
    assert all(len(piece.split()) <= 3 for piece in pieces)


def test_createsite_accepts_the_kb_provider_without_a_key():
    import json
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("createsite", "Docs2", "--origin", "https://docs2.example", "--provider", "kb", stdout=out)
    key = json.loads(out.getvalue())["key"]
    config = ProviderConfig.objects.get(site__key=key)
    assert (config.kind, config.api_key, config.endpoint().protocol) == ("kb", "", "kb")


async def test_a_greeting_gets_an_invitation_to_ask_not_an_apology(docs):
    from backend.kb.answerer import NO_QUESTION

    frames = await ask(docs, "Hi there, thanks!")
    assert frames[-1]["text"] == NO_QUESTION
    assert "sources" not in frames[-1]


@pytest.mark.parametrize("text", ['"NEAR(widget* AND', "'; DROP TABLE kb_passage; --", "???", "(((*)))"])
async def test_hostile_text_through_the_socket_gets_a_reply_not_a_crash(docs, text):
    from backend.kb.answerer import NO_QUESTION

    frames = await ask(docs, text)
    assert frames[-1]["status"] == "complete"
    assert frames[-1]["text"] in (DONT_KNOW, NO_QUESTION) or frames[-1]["sources"]
    again = await ask(docs, "How are webhook requests signed?", client_id="after")
    assert again[-1]["sources"][0]["title"] == "Webhooks and the tickets API"
