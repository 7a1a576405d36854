"""Semantic search through the provider's embeddings endpoint, mixed with the full-text rank, against a
fake embeddings server on 127.0.0.1 speaking the OpenAI, Gemini and Ollama formats."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from backend.kb.embeddings import Embedder, embed_passages, embedder_for, parse
from backend.kb.models import Article, KnowledgeSettings, Passage
from backend.kb.retrieval import fuse, retrieve
from backend.kb.search import search
from backend.providers.base import ProviderError
from tests.conftest import FAKE_KEY, chat, connect_and_hello, receive_until_end

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
# "expensive" occurs in no article: full-text search alone cannot connect the question to prices.
QUESTION = "Is this expensive?"
SHOP = [
    ("Plans and prices", "Our plans cost 10 dollars a month, billed yearly."),
    ("Shipping", "Parcels arrive in three days anywhere in Europe."),
    ("Returns", "Send the parcel back within 30 days for a full refund."),
    ("Deploying the shop", "The shop runs on daphne behind nginx."),
]


@pytest.fixture
def shop(acme):
    for title, body in SHOP:
        Article.objects.create(
            site=acme, title=title, body=body, url=f"https://acme.example/{title.split()[0].lower()}"
        )
    return acme


def turn_on(site, server, kind: str = "openai", **fields) -> KnowledgeSettings:
    base = f"{server.origin}/v1" if kind in ("openai", "gemini") else server.origin
    return KnowledgeSettings.objects.create(
        site=site, use_embeddings=True, embedding_kind=kind, embedding_base_url=base, **fields
    )


def test_fusion_rewards_passages_both_rankings_agree_on():
    fused = fuse([[1, 2, 3], [3, 4, 1]])
    assert [pk for pk, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


@pytest.mark.parametrize("kind", ["openai", "gemini", "ollama"])
async def test_passages_and_questions_are_embedded_in_each_providers_format(shop, embeddings_server, kind):
    await db(turn_on)(shop, embeddings_server, kind, embedding_api_key=FAKE_KEY)
    count = await db(embed_passages)(shop.pk)
    stored = await db(Passage.objects.filter(site=shop).exclude(embedding=None).count)()
    assert count == stored == await db(Passage.objects.filter(site=shop).count)()
    first = embeddings_server.requests[0]
    if kind == "openai":
        assert first.path == "/v1/embeddings"
        assert first.headers["authorization"] == f"Bearer {FAKE_KEY}"
        assert first.json()["model"] == "text-embedding-3-small" and len(first.json()["input"]) > 1
    elif kind == "gemini":
        assert first.path == "/v1/models/gemini-embedding-001:embedContent"
        assert first.headers["x-goog-api-key"] == FAKE_KEY
        assert list(first.json()) == ["content"]
    else:
        assert first.path == "/api/embed"
        assert "authorization" not in first.headers
    embeddings_server.reset()
    hits = await retrieve(shop.pk, QUESTION, 3)
    assert hits[0].title == "Plans and prices"
    assert len(embeddings_server.requests) == 1  # only the question; passages are not embedded again


async def test_without_embeddings_the_same_question_finds_nothing_relevant(shop):
    assert await retrieve(shop.pk, QUESTION, 3) == []


async def test_the_mix_keeps_full_text_hits_that_embeddings_miss(shop, embeddings_server):
    await db(turn_on)(shop, embeddings_server, embedding_api_key=FAKE_KEY)
    await db(embed_passages)(shop.pk)
    # No topic of the fake covers "daphne": only the full-text side finds the deployment article.
    hits = await retrieve(shop.pk, "Does it run on daphne?", 4)
    assert hits[0].title == "Deploying the shop"


async def test_a_failing_embeddings_endpoint_falls_back_to_full_text(shop, embeddings_server, caplog):
    await db(turn_on)(shop, embeddings_server, embedding_api_key=FAKE_KEY)
    await db(embed_passages)(shop.pk)
    from tests.fakes.formats import openai_error

    embeddings_server.queue(openai_error(503, "The server is overloaded.", "server_error"))
    hits = await retrieve(shop.pk, "How long does shipping take?", 3)
    assert hits == await db(search)(shop.pk, "How long does shipping take?", 3)
    assert hits[0].title == "Shipping"
    assert "embeddings failed" in caplog.text
    assert FAKE_KEY not in caplog.text


async def test_the_chat_providers_key_is_used_when_none_is_set(shop, embeddings_server):
    knowledge = await db(turn_on)(shop, embeddings_server)
    embedder = await db(embedder_for)(knowledge)
    assert embedder.api_key == FAKE_KEY  # Acme's OpenAI chat provider
    assert FAKE_KEY not in repr(embedder)


async def test_a_missing_key_is_reported_without_leaking_anything(shop, embeddings_server):
    await db(turn_on)(shop, embeddings_server, kind="gemini")
    with pytest.raises(ProviderError, match="400: API key not valid"):
        await db(embed_passages)(shop.pk)


async def test_grounded_prompts_use_the_mixed_ranking(shop, embeddings_server, fake_openai):
    await db(turn_on)(shop, embeddings_server, embedding_api_key=FAKE_KEY)
    await db(embed_passages)(shop.pk)
    async with chat(shop.key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "m", "text": QUESTION})
        frames = await receive_until_end(ws)
    system = fake_openai.requests[0].json()["messages"][0]["content"]
    assert "[1] Plans and prices\nURL: https://acme.example/plans\nOur plans cost 10 dollars" in system
    assert frames[-1]["sources"][0] == {"title": "Plans and prices", "url": "https://acme.example/plans"}


async def test_importkb_embeds_new_passages_and_only_those(acme, embeddings_server, tmp_path):
    await db(turn_on)(acme, embeddings_server, embedding_api_key=FAKE_KEY)
    (tmp_path / "a.md").write_text("# Prices\n\nOur plans cost money.")
    await db(call_command)("importkb", "--", acme.key, str(tmp_path))
    passage = await db(Passage.objects.get)(site=acme)
    assert passage.embedding_model == "openai:text-embedding-3-small"
    assert passage.embedding[0] > 0  # the cost topic
    requests = len(embeddings_server.requests)
    await db(call_command)("importkb", "--", acme.key, str(tmp_path))
    assert len(embeddings_server.requests) == requests


def test_malformed_embedding_responses_are_provider_errors():
    embedder = Embedder("openai", "http://127.0.0.1:9", "m")
    for data in [{}, {"data": [{"index": 0}]}, {"data": [{"index": 0, "embedding": ["x"]}]}, [], None]:
        with pytest.raises(ProviderError, match="malformed"):
            parse(embedder, data, 1)
    with pytest.raises(ProviderError, match="2 embeddings for 1"):
        parse(Embedder("ollama", "http://x", "m"), {"embeddings": [[1.0], [2.0]]}, 1)
