"""PostgreSQL goes away and comes back, simulated with a TCP proxy this test cuts (the shared server keeps running)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest
import websockets

from tests.fakes.formats import openai_reply
from tests.ops.servers import Daphne, TcpProxy
from tests.processes import create_site, server_env
from tests.services.cluster import REDIS_URL, Cluster, services, with_port

pytestmark = [services, pytest.mark.services]

UNAVAILABLE = "The chat service is briefly unavailable. Your message was not lost: please send it again."


@pytest.fixture(params=["0", "60"], ids=["fresh-connections", "persistent-connections"])
def proxied(request, tmp_path, process_database_url, fake_openai):
    """One daphne whose every database connection goes through a proxy the test can cut."""
    proxy = TcpProxy(urlsplit(process_database_url).port or 5432)
    env = server_env(
        with_port(process_database_url, proxy.port), REDIS_URL=REDIS_URL, DATABASE_CONN_MAX_AGE=request.param
    )
    direct = Cluster(env=server_env(process_database_url, REDIS_URL=REDIS_URL), site_key="")
    direct.site_key = create_site(direct.env, fake_openai.origin)
    with Daphne(env, tmp_path / "daphne.log") as server:
        direct.servers.append(server)
        yield proxy, direct
    proxy.close()


def health(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=15)


def test_when_the_database_is_unreachable_visitors_get_unavailable_and_service_resumes(proxied, fake_openai):
    proxy, cluster = proxied
    server = cluster.servers[0]
    fake_openai.queue(openai_reply(["First", "."]))

    async def scenario() -> dict:
        seen: dict = {}
        async with cluster.visitor(0) as visitor:
            seen["first"] = await visitor.ask("m1", "One")
            proxy.cut()
            seen["refused"] = await visitor.ask("m2", "Two")
            seen["health"] = await asyncio.to_thread(health, server.port)
            # A new visitor while the database is away: told so, then closed with 4503 (try again later).
            async with websockets.connect(server.url(cluster.site_key), origin="https://shop.example") as other:
                seen["newcomer"] = json_frames(await other.recv())
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await other.recv()
                seen["close_code"] = closed.value.rcvd.code
            proxy.restore()
            seen["resent"] = await visitor.ask("m2", "Two")
        return seen

    seen = asyncio.run(scenario())
    assert seen["first"][-1]["text"] == "First."
    assert seen["refused"] == [{"type": "error", "code": "unavailable", "message": UNAVAILABLE, "reply_to": "m2"}]
    assert seen["health"].status_code == 503
    assert seen["health"].json()["checks"]["database"]["status"] == "down"
    assert seen["health"].json()["checks"]["channel_layer"]["status"] == "ok"
    assert seen["newcomer"]["code"] == "unavailable" and seen["close_code"] == 4503
    assert seen["resent"][-1]["status"] == "complete" and seen["resent"][-1]["text"] == "You said: Two"
    assert health(server.port).status_code == 200
    assert [(role, text) for role, text, _, _ in cluster.replies()] == [
        ("user", "One"),
        ("assistant", "First."),
        ("user", "Two"),
        ("assistant", "You said: Two"),
    ]
    # The connection called on the history it read last, so m2's first request went out while the database
    # was away; the read beside it failed, and it was closed before the provider answered. No other call.
    last_texts = [request.json()["messages"][-1]["content"] for request in fake_openai.requests]
    assert last_texts[0] == "One" and set(last_texts[1:]) == {"Two"} and len(last_texts) <= 3


def test_a_reply_that_finishes_while_the_database_is_away_is_saved_when_it_returns(proxied, fake_openai):
    proxy, cluster = proxied
    fake_openai.queue(openai_reply(["Slow", " but", " sure", "."], delay=0.1))

    async def scenario() -> list[dict]:
        async with cluster.visitor(0) as visitor:
            await visitor.send({"type": "message", "id": "m1", "text": "Hello"})
            frames = [await visitor.receive(), await visitor.receive()]
            proxy.cut()
            await asyncio.to_thread(fake_openai.wait_for, lambda: fake_openai.completed == 1)
            await asyncio.sleep(0.5)  # the first attempts to save fail meanwhile
            proxy.restore()
            while frames[-1]["type"] != "end":
                frames.append(await visitor.receive())
            return frames

    frames = asyncio.run(scenario())
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "Slow but sure."
    assert not [frame for frame in frames if frame["type"] == "error"]
    assert "service unavailable, retrying" in cluster.logs()
    assert [(role, text, status) for role, text, status, _ in cluster.replies()] == [
        ("user", "Hello", "complete"),
        ("assistant", "Slow but sure.", "complete"),
    ]


def json_frames(text: str) -> dict:
    import json

    return json.loads(text)
