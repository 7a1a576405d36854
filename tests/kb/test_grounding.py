"""Grounded replies: the passages and instructions reach the provider, and the sources reach the visitor."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from backend.chat.models import Message
from backend.kb.grounding import INSTRUCTIONS, NOTHING_FOUND
from backend.kb.models import Article
from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.fakes.formats import openai_error, openai_reply

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
EMBED_SOURCE = {
    "title": "Embedding the chat widget on your website",
    "url": "https://help.parley.example/help/embedding-the-widget/",
}


async def ask(site, text: str, client_id: str = "c1") -> list[dict]:
    async with chat(site.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": client_id, "text": text})
        return await receive_until_end(ws)


def system_prompt(request) -> str:
    messages = request.json()["messages"]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


async def test_the_best_passages_and_the_instructions_reach_the_provider(acme_help, fake_openai):
    await ask(acme_help, "How do I embed the widget on my site?")
    system = system_prompt(fake_openai.requests[0])
    assert system.startswith(acme_help.system_prompt)
    assert INSTRUCTIONS in system
    assert "[1] Embedding the chat widget on your website" in system
    assert "URL: https://help.parley.example/help/embedding-the-widget/" in system
    assert '<script src="https://SERVER/widget.js" data-site="SITE_KEY" async></script>' in system
    assert "offer to connect the visitor with a person" in system
    # The visitor's own words still go as the last user message, not inside the system prompt.
    assert fake_openai.requests[0].json()["messages"][-1] == {
        "role": "user",
        "content": "How do I embed the widget on my site?",
    }


async def test_the_end_frame_and_the_stored_reply_carry_the_sources(acme_help, fake_openai):
    frames = await ask(acme_help, "How do I embed the widget on my site?")
    end = frames[-1]
    assert end["status"] == "complete"
    assert end["sources"][0] == EMBED_SOURCE
    assert len(end["sources"]) == len({s["url"] for s in end["sources"]})  # each article once
    assert all(set(source) == {"title", "url"} for source in end["sources"])
    reply = await db(Message.objects.get)(id=end["message"])
    assert reply.sources == end["sources"]
    # Only the end frame changes: start and deltas keep their shape.
    assert set(frames[0]) == {"type", "reply_to", "message"}
    assert all(set(f) == {"type", "message", "text"} for f in frames if f["type"] == "delta")


async def test_a_resent_message_replays_the_reply_with_its_sources(acme_help, fake_openai):
    async with chat(acme_help.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "same", "text": "How do I embed the widget?"})
        first = await receive_until_end(ws)
        await ws.send_json_to({"type": "message", "id": "same", "text": "How do I embed the widget?"})
        again = await receive_until_end(ws)
    assert len(fake_openai.requests) == 1
    assert [f["type"] for f in again] == ["start", "end"]
    assert again[-1]["message"] == first[-1]["message"]
    assert again[-1]["sources"] == first[-1]["sources"]
    assert again[-1]["sources"][0] == EMBED_SOURCE


async def test_a_site_without_articles_keeps_its_prompt_and_sends_no_sources(acme, fake_openai):
    frames = await ask(acme, "How do I embed the widget?")
    assert system_prompt(fake_openai.requests[0]) == acme.system_prompt
    assert "sources" not in frames[-1]
    reply = await db(Message.objects.get)(id=frames[-1]["message"])
    assert reply.sources == []


async def test_when_no_article_matches_the_model_is_told_to_say_it_does_not_know(acme_help, fake_openai):
    frames = await ask(acme_help, "What's the weather in Paris tomorrow?")
    system = system_prompt(fake_openai.requests[0])
    assert NOTHING_FOUND in system
    assert "[1]" not in system
    assert "sources" not in frames[-1]


async def test_a_provider_failure_before_any_text_sends_no_sources(acme_help, fake_openai):
    fake_openai.queue(openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
    frames = await ask(acme_help, "How do I embed the widget on my site?")
    assert frames[-1]["status"] == "error"
    assert "sources" not in frames[-1]


async def test_another_sites_articles_never_reach_the_prompt(acme, globex, fake_openai):
    await db(Article.objects.create)(
        site=globex, title="Globex internal pricing", body="The widget costs 5 dollars for Globex partners."
    )
    await db(Article.objects.create)(site=acme, title="Acme widget", body="Acme's widget is free.")
    await ask(acme, "how much does the widget cost?")
    system = system_prompt(fake_openai.requests[0])
    assert "Acme's widget is free." in system
    assert "Globex" not in system


async def test_a_stopped_grounded_reply_keeps_its_sources(acme_help, fake_openai):
    fake_openai.queue(openai_reply(["Paste ", "the ", "script ", "tag ", "before ", "body."], delay=0.2))
    async with chat(acme_help.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "s1", "text": "How do I embed the widget?"})
        start = await ws.receive_json_from()
        assert start["type"] == "start"
        delta = await ws.receive_json_from()
        assert delta["type"] == "delta"
        await ws.send_json_to({"type": "stop"})
        frames = await receive_until_end(ws)
    end = frames[-1]
    assert end["status"] == "stopped"
    assert end["sources"][0] == EMBED_SOURCE


async def test_a_site_without_articles_pays_one_query_for_retrieval(acme):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backend.kb.grounding import ground

    def measure():
        with CaptureQueriesContext(connection) as queries:
            grounding = async_to_sync(ground)(acme.pk, "How do I embed the widget?")
        return grounding, len(queries)

    from asgiref.sync import async_to_sync

    grounding, count = await db(measure)()
    assert grounding.has_articles is False and grounding.hits == []
    assert count == 1


def test_the_sources_of_a_reply_depend_on_who_answered_and_how_it_ended():
    from backend.kb.grounding import Grounding
    from backend.kb.search import Hit
    from backend.providers.base import Endpoint, StreamEnd

    hits = [
        Hit(1, 10, "A", "https://x.example/a", "", "text", 2.0),
        Hit(2, 10, "A", "https://x.example/a", "Part", "more", 1.5),
        Hit(3, 11, "B", "", "", "other", 1.0),
    ]
    grounding = Grounding(hits=hits, has_articles=True)
    model = Endpoint(kind="openai", protocol="chat_completions", base_url="http://x", model="m")
    kb = Endpoint(kind="kb", protocol="kb", base_url="kb://site", model="best-passage")
    both = [{"title": "A", "url": "https://x.example/a"}, {"title": "B", "url": ""}]
    assert grounding.sources_for(model, StreamEnd("stop"), "Hello") == both
    assert grounding.sources_for(model, None, "Hel") == both  # stopped or failed after some text
    assert grounding.sources_for(model, None, "") == []
    assert grounding.sources_for(kb, StreamEnd("stop", sources=[both[1]]), "B says") == [both[1]]
    assert grounding.sources_for(kb, StreamEnd("stop", sources=[]), "I don't know") == []
    assert grounding.sources_for(kb, None, "To put the") == []  # stopped before it named its article
    assert Grounding().sources_for(model, StreamEnd("stop"), "Hi") == []


async def test_a_follow_up_is_grounded_on_the_previous_question(acme_help, fake_openai):
    async with chat(acme_help.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "1", "text": "How are webhook requests signed?"})
        await receive_until_end(ws)
        await ws.send_json_to({"type": "message", "id": "2", "text": "Could you elaborate?"})
        frames = await receive_until_end(ws)
    system = system_prompt(fake_openai.requests[1])
    assert "[1] Webhooks and the tickets API" in system
    assert frames[-1]["sources"][0]["title"] == "Webhooks and the tickets API"


async def test_a_greeting_on_its_own_asks_the_model_not_to_guess(acme_help, fake_openai):
    await ask(acme_help, "Hello!")
    system = system_prompt(fake_openai.requests[0])
    assert NOTHING_FOUND in system
    assert "Greetings and thanks may be answered briefly" in system


async def test_a_returning_visitor_sees_the_sources_in_the_history(acme_help, fake_openai):
    async with chat(acme_help.key) as ws:
        ready = await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "h1", "text": "How do I embed the widget?"})
        end = (await receive_until_end(ws))[-1]
    async with chat(acme_help.key) as ws:
        again = await connect_and_hello(ws, ready["visitor"])
    question, reply = again["history"]
    assert "sources" not in question
    assert reply["id"] == end["message"]
    assert reply["sources"] == end["sources"]
    assert reply["sources"][0] == EMBED_SOURCE
