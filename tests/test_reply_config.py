"""An open chat keeps its site's configuration between replies, and takes up a change at the next message."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.chat import services
from backend.chat.config import load_reply_config, reply_config
from backend.chat.models import Conversation, Visitor, hash_token, new_visitor_token
from backend.providers.models import Price, ProviderConfig
from backend.quotas.models import SiteQuota
from backend.sites.models import Site
from tests.conftest import chat, connect_and_hello

db = database_sync_to_async


async def ask(ws, client_id: str, text: str = "Hello?") -> list[dict]:
    await ws.send_json_to({"type": "message", "id": client_id, "text": text})
    frames = [await ws.receive_json_from()]
    while frames[-1]["type"] not in ("end", "error"):
        frames.append(await ws.receive_json_from())
    return frames


@pytest.mark.django_db(transaction=True)
async def test_a_new_system_prompt_reaches_the_next_reply_of_an_open_chat(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")

        def edit() -> None:
            site = Site.objects.get(pk=acme.pk)
            site.system_prompt = "Answer like a pirate."
            site.save()

        await db(edit)()
        await ask(ws, "c2")
    first, second = (request.json()["messages"][0] for request in fake_openai.requests)
    assert first["role"] == "system" and "pirate" not in first["content"]
    assert second == {"role": "system", "content": "Answer like a pirate."}


@pytest.mark.django_db(transaction=True)
async def test_a_provider_edited_during_a_chat_answers_its_next_message(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")

        def edit() -> None:
            config = ProviderConfig.objects.get(site=acme)
            config.model = "gpt-4.1"
            config.save()

        await db(edit)()
        await ask(ws, "c2")
    assert [request.json()["model"] for request in fake_openai.requests] == ["gpt-4o-mini", "gpt-4.1"]


@pytest.mark.django_db(transaction=True)
async def test_a_cap_lowered_during_a_chat_refuses_its_next_message(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        assert (await ask(ws, "c1"))[-1]["type"] == "end"
        await db(SiteQuota.objects.update_or_create)(site=acme, defaults={"daily_token_cap": 1})
        refused = (await ask(ws, "c2"))[-1]
    assert refused["type"] == "error" and refused["code"] == "quota_exceeded"
    assert len(fake_openai.requests) == 1


@pytest.mark.django_db(transaction=True)
async def test_a_price_edited_during_a_chat_prices_its_next_reply(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")

        def edit() -> None:
            price = Price.objects.get(kind="openai", model="gpt-4o-mini")
            price.input_per_million = price.output_per_million = Decimal(1000)
            price.save()

        await db(edit)()
        await ask(ws, "c2")
    first, second = await db(lambda: list(acme.conversations.get().messages.filter(role="assistant")))()
    # The fake bills a few tokens: at 1,000 USD per million they cost far more than at the seeded price.
    assert second.cost > 100 * first.cost > 0


@pytest.mark.django_db
def test_a_reply_reads_the_configuration_again_only_when_it_changed(acme, fake_openai):
    visitor = Visitor.objects.create(site=acme, token_hash=hash_token(new_visitor_token()))
    conversation = Conversation.objects.create(site=acme, visitor=visitor)
    known = load_reply_config(acme.pk)

    def tables_read(client_id: str) -> set[str]:
        with CaptureQueriesContext(connection) as queries:
            prepared = services.prepare_reply(conversation, client_id, "Hello?", known)
        assert prepared.config is not None and prepared.reservation is not None
        # A query that reads rows of a table starts with its columns (subqueries come later in the text).
        tables = ("sites_site", "providers_providerconfig")
        return {table for q in queries for table in tables if q["sql"].startswith(f'SELECT "{table}".')}

    assert tables_read("c1") == set()
    ProviderConfig.objects.filter(site=acme).get().save()  # any saved change renews the site's stamp
    assert tables_read("c2") == {"sites_site", "providers_providerconfig"}


@pytest.mark.django_db
def test_connections_of_a_site_share_its_configuration_until_its_stamp_changes(acme, fake_openai):
    def queries_for_config() -> int:
        site = Site.objects.get(pk=acme.pk)  # what a new connection reads before anything else
        with CaptureQueriesContext(connection) as queries:
            config = reply_config(site, site.config_stamp)
        assert config.stamp == site.config_stamp
        return len(queries)

    queries_for_config()
    assert queries_for_config() == 0
    # Another process's edit reaches this one through the row alone: its new stamp makes the next
    # connection read the configuration again.
    Site.objects.filter(pk=acme.pk).update(system_prompt="Answer like a pirate.", config_stamp=uuid.uuid4())
    assert queries_for_config() > 0
    site = Site.objects.get(pk=acme.pk)
    assert reply_config(site, site.config_stamp).site.system_prompt == "Answer like a pirate."


@pytest.mark.django_db(transaction=True)
async def test_a_chat_opened_after_another_process_edited_the_site_answers_with_the_edit(acme, fake_openai):
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c1")
    # As saved by another process: the row and its stamp change, and this process hears nothing.
    await db(Site.objects.filter(pk=acme.pk).update)(system_prompt="Answer like a pirate.", config_stamp=uuid.uuid4())
    async with chat(acme.key) as ws:
        await connect_and_hello(ws)
        await ask(ws, "c2")
    first, second = (request.json()["messages"][0] for request in fake_openai.requests)
    assert "pirate" not in first["content"]
    assert second == {"role": "system", "content": "Answer like a pirate."}
