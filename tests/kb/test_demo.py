"""What a newcomer sees after `make run` with no key: real answers from the help corpus, with links
that open, and an honest "I don't know"."""

from __future__ import annotations

from io import StringIO

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from backend.kb.answerer import DONT_KNOW
from tests.conftest import chat, connect_and_hello, receive_until_end

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(settings, prices):
    settings.DEMO_PROVIDER_KEYS = [("openai", "")]
    settings.PUBLIC_URL = "http://127.0.0.1:8000"
    call_command("setupdemo", stdout=StringIO())
    return settings.DEMO_SITE_KEY


async def ask_demo(key: str, text: str) -> dict:
    async with chat(key, origin="http://127.0.0.1:8000") as ws:
        ready = await connect_and_hello(ws)
        assert ready["config"]["available"] is True
        await ws.send_json_to({"type": "message", "id": "q", "text": text})
        return (await receive_until_end(ws))[-1]


async def test_a_newcomer_asking_how_to_embed_the_widget_gets_the_article_and_its_link(demo, client):
    end = await ask_demo(demo, "how do I embed the widget?")
    link = "http://127.0.0.1:8000/help/embedding-the-widget/"
    assert end["sources"] == [{"title": "Embedding the chat widget on your website", "url": link}]
    assert f"({link})" in end["text"]
    assert "data-site" in end["text"]
    # The link opens the article on this server.
    page = await database_sync_to_async(client.get)("/help/embedding-the-widget/")
    assert page.status_code == 200
    assert b"<h1>Embedding the chat widget on your website</h1>" in page.content
    assert b"&lt;script src=&quot;https://SERVER/widget.js&quot;" in page.content  # shown, escaped


async def test_the_demo_says_honestly_when_it_does_not_know(demo):
    end = await ask_demo(demo, "What's the weather in Paris tomorrow?")
    assert end["text"] == DONT_KNOW
    assert "sources" not in end


def test_the_help_index_lists_every_built_in_article(client):
    page = client.get("/help/")
    assert page.status_code == 200
    for slug in ["installing", "embedding-the-widget", "webhooks", "deploying", "privacy"]:
        assert f'href="/help/{slug}/"'.encode() in page.content


@pytest.mark.parametrize("path", ["/help/nope/", "/help/..%2Fsettings/", "/help/../README/", "/help/%2e%2e/"])
def test_unknown_or_escaping_help_paths_are_not_found(client, path):
    assert client.get(path).status_code == 404


def test_the_help_pages_take_only_get(client):
    assert client.post("/help/installing/").status_code == 405
