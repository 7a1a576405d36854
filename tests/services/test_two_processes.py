"""Two daphne processes on one PostgreSQL and one Redis: a visitor may land on either."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.formats import openai_reply
from tests.services.cluster import services

pytestmark = [services, pytest.mark.services]


def test_a_visitor_reconnecting_to_the_other_process_sees_the_same_history(cluster, fake_openai):
    fake_openai.queue(openai_reply(["We", " ship", " worldwide", "."]))

    async def scenario() -> tuple[dict, list[dict], dict]:
        async with cluster.visitor(0) as first:
            frames = await first.ask("m1", "Do you ship to Peru?")
        async with cluster.visitor(1, token=first.token) as second:
            return first.ready, frames, second.ready

    first_ready, frames, second_ready = asyncio.run(scenario())
    assert frames[-1]["status"] == "complete"
    assert second_ready["visitor"] == first_ready["visitor"]
    assert second_ready["conversation"] == first_ready["conversation"]
    assert [(item["role"], item["text"]) for item in second_ready["history"]] == [
        ("user", "Do you ship to Peru?"),
        ("assistant", "We ship worldwide."),
    ]
    assert second_ready["history"][1]["id"] == frames[0]["message"]


def test_a_message_resent_to_the_other_process_after_a_disconnect_is_not_answered_twice(cluster, fake_openai):
    words = [f" w{i}" for i in range(200)]
    fake_openai.queue(openai_reply(words, delay=0.05))

    async def scenario() -> tuple[list[str], list[dict]]:
        async with cluster.visitor(0) as first:
            await first.send({"type": "message", "id": "m1", "text": "Tell me a long story."})
            assert (await first.receive())["type"] == "start"
            seen = [(await first.receive())["text"] for _ in range(3)]
        # The socket is gone; the widget reconnects to the other process and resends at once.
        async with cluster.visitor(1, token=first.token) as second:
            return seen, await second.ask("m1", "Tell me a long story.")

    seen, resent = asyncio.run(scenario())
    start, end = resent
    assert start["type"] == "start" and start["reply_to"] == "m1"
    assert end["type"] == "end" and end["status"] == "stopped"
    assert end["text"].startswith("".join(seen)) and len(end["text"]) < len("".join(words))
    assert len(fake_openai.requests) == 1  # answered once, by the first process
    rows = cluster.replies()
    assert [(role, status, client_id) for role, _, status, client_id in rows] == [
        ("user", "complete", "m1"),
        ("assistant", "stopped", None),
    ]


def test_a_message_sent_twice_at_once_to_both_processes_calls_the_provider_once(cluster, fake_openai):
    fake_openai.queue(openai_reply(["One", " answer", "."], delay=0.05))

    async def scenario() -> list[list[dict]]:
        async with cluster.visitor(0) as first, cluster.visitor(1, token=first.token) as second:
            return await asyncio.gather(first.ask("m1", "Hello?"), second.ask("m1", "Hello?"))

    answers = asyncio.run(scenario())
    ends = [frames[-1] for frames in answers]
    assert all(end["type"] == "end" for end in ends), answers
    assert [end["text"] for end in ends] == ["One answer.", "One answer."]
    assert len(fake_openai.requests) == 1
    rows = cluster.replies()
    assert [role for role, *_ in rows] == ["user", "assistant"]


def test_each_process_reports_healthy_on_the_shared_services(cluster):
    for index in range(2):
        with cluster.http(index) as http:
            body = http.get("/healthz").json()
        assert body["status"] == "ok"
        assert body["checks"]["database"]["status"] == "ok" and body["checks"]["channel_layer"]["status"] == "ok"
