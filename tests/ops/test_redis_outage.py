"""Redis stops and comes back: visitors get `unavailable`, lose nothing, and the same socket works again.

The test runs its own redis-server on a free port, never the shared one.
"""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from tests.fakes.formats import openai_reply
from tests.ops.servers import REPLIES, Daphne, RedisServer, Visitor, query
from tests.processes import create_site, manage, server_env

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")


@pytest.fixture
def redis_server(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path, redis_server, fake_openai):
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL=redis_server.url)
    manage(env, "migrate", "--noinput", "-v0")
    key = create_site(env, fake_openai.origin)
    with Daphne(env, tmp_path / "daphne.log") as daphne:
        yield daphne, key, env


def health(daphne: Daphne) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{daphne.port}/healthz", timeout=10)


async def resend_until_answered(visitor: Visitor, client_id: str, text: str, attempts: int = 20) -> list[dict]:
    """Resend like the widget does after `unavailable`, a bounded number of times."""
    for _ in range(attempts):
        frames = await visitor.ask(client_id, text)
        if frames[-1]["type"] == "end":
            return frames
        assert frames[-1]["code"] == "unavailable", frames
        await asyncio.sleep(0.25)
    raise AssertionError(f"{client_id} was never answered")


def test_when_redis_stops_messages_get_unavailable_and_the_same_socket_works_when_it_returns(
    server, redis_server, fake_openai
):
    daphne, key, env = server
    fake_openai.queue(openai_reply(["Hello", "!"]), openai_reply(["Back", " again", "."]))

    async def scenario() -> tuple[list[dict], dict, dict, list[dict]]:
        async with Visitor(daphne.url(key)) as visitor:
            first = await visitor.ask("m1", "Hi")
            assert first[-1]["status"] == "complete"

            redis_server.stop()
            refused = await visitor.ask("m2", "Are you there?")
            await visitor.send({"type": "ping"})
            pong = await visitor.receive()
            down = await asyncio.to_thread(health, daphne)

            redis_server.start()
            answered = await resend_until_answered(visitor, "m2", "Are you there?")
            return refused, pong, down.json() | {"code": down.status_code}, answered

    refused, pong, down, answered = asyncio.run(scenario())
    assert refused == [
        {
            "type": "error",
            "code": "unavailable",
            "message": "The chat service is briefly unavailable. Your message was not lost: please send it again.",
            "reply_to": "m2",
        }
    ]
    assert pong == {"type": "pong"}  # the connection stayed open through the outage
    assert down["code"] == 503 and down["checks"]["channel_layer"]["status"] == "down"
    assert down["checks"]["database"]["status"] == "ok"
    assert answered[-1]["status"] == "complete" and answered[-1]["text"] == "Back again."
    assert health(daphne).status_code == 200
    rows = query(env, REPLIES)
    assert [(role, text) for role, text, _, _ in rows] == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Are you there?"),
        ("assistant", "Back again."),
    ]
    assert len(fake_openai.requests) == 2  # the refused message never reached the provider
    assert "Traceback" not in daphne.log()


def test_an_idle_connection_on_the_redis_layer_keeps_listening_quietly(server, fake_openai):
    """channels_redis waits 5 s per BZPOPMIN; the client's read timeout must outlast it (settings.py)."""
    daphne, key, _ = server
    fake_openai.queue(openai_reply(["Still", " here"]))

    async def scenario() -> list[dict]:
        async with Visitor(daphne.url(key)) as visitor:
            await asyncio.sleep(6.5)  # longer than one BZPOPMIN round, not a timing assertion
            return await visitor.ask("m1", "Hello?")

    frames = asyncio.run(scenario())
    assert frames[-1]["text"] == "Still here"
    assert "channel layer unavailable" not in daphne.log()


def test_streaming_tokens_never_travel_through_redis(server, redis_server, fake_openai):
    """Redis sees a fixed number of commands per reply, not one per token."""
    import redis

    daphne, key, _ = server
    client = redis.Redis(port=redis_server.port)

    def commands() -> int:
        return sum(stat["calls"] for stat in client.info("commandstats").values())

    async def reply(words: int) -> list[dict]:
        fake_openai.queue(openai_reply([f" w{i}" for i in range(words)]))
        async with Visitor(daphne.url(key)) as visitor:
            return await visitor.ask(f"m{words}", "Go")

    before = commands()
    short = asyncio.run(reply(5))
    middle = commands()
    long = asyncio.run(reply(400))
    after = commands()
    assert short[-1]["status"] == long[-1]["status"] == "complete"
    assert len([f for f in long if f["type"] == "delta"]) == 400
    # The 400-token reply costs Redis no more than the 5-token one did (with room for the INFO calls
    # and the idle listener's polls).
    assert (after - middle) <= (middle - before) + 10
    # A fixed handful per reply, counted by Redis's commandstats (which counts each command a Lua script
    # runs): the claim, the rate-limit counters, the quota ledger's reserve and settle scripts (about 20),
    # and telling agents of the message and the reply through the channel layer.
    assert after - middle < 80
