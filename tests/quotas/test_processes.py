"""The invariant across processes: two daphne servers share one SQLite file and a site's daily cap."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.fakes.formats import openai_reply
from tests.fakes.server import Recorded, Reply
from tests.processes import create_site, daphne, manage, server_env

ORIGIN = "https://shop.example"
VISITORS = 50


@pytest.fixture
def live_env(tmp_path):
    # Both servers sit behind "our proxy" on 127.0.0.1, which tells them each visitor's address.
    env = server_env(f"sqlite:///{tmp_path / 'shared.sqlite3'}", TRUSTED_PROXIES="127.0.0.1")
    manage(env, "migrate", "--noinput", "-v0")
    return env


def bills_everything_allowed(request: Recorded) -> Reply:
    body = request.json()
    return openai_reply(
        ["Happy", " to", " help"], usage=(len(str(body["messages"])) // 4, body["max_tokens"]), delay=0.1
    )


async def visitor(port: int, site_key: str, number: int) -> dict:
    url = f"ws://127.0.0.1:{port}/ws/chat/{site_key}/"
    headers = {"X-Forwarded-For": f"198.51.100.{number}"}
    async with websockets.connect(url, origin=ORIGIN, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "ready"
        await ws.send(json.dumps({"type": "message", "id": f"m{number}", "text": f"question {number}"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame["type"] in ("end", "error"):
                return frame


async def burst(ports: list[int], site_key: str) -> list[dict]:
    return await asyncio.gather(*(visitor(ports[n % len(ports)], site_key, n) for n in range(VISITORS)))


def test_two_processes_answering_a_burst_never_overshoot_the_daily_cap(live_env, fake_openai):
    fake_openai.queue(*[bills_everything_allowed] * VISITORS)
    key = create_site(
        live_env, fake_openai.origin,
        "--max-reply-tokens", "100", "--daily-token-cap", "1000", "--daily-cost-cap", "0.01", origin=ORIGIN,
    )  # fmt: skip
    with daphne(live_env) as first, daphne(live_env) as second:
        frames = asyncio.run(burst([first, second], key))
    answered = [f for f in frames if f["type"] == "end"]
    refused = [f for f in frames if f["type"] == "error"]
    assert {f["code"] for f in refused} == {"quota_exceeded"}
    assert 1 <= len(answered) <= 6 and len(refused) >= VISITORS - 6
    assert len(fake_openai.requests) == len(answered)
    usage = json.loads(manage(live_env, "usage", "--json", "--", key))
    assert usage["day"]["token_cap"] == 1000 and usage["day"]["cost_cap"] == "0.010000"
    assert 0 < usage["day"]["tokens"] <= 1000
    billed = sum(r.json()["max_tokens"] + len(str(r.json()["messages"])) // 4 for r in fake_openai.requests)
    assert usage["day"]["tokens"] == billed
