"""End to end: daphne on a free port, a site made with createsite, a real WebSocket client."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.fakes.formats import openai_reply
from tests.processes import PROVIDER_KEY, create_site, daphne, manage, server_env

ORIGIN = "https://shop.example"


@pytest.fixture
def live_server_env(tmp_path):
    env = server_env(f"sqlite:///{tmp_path / 'e2e.sqlite3'}")
    manage(env, "migrate", "--noinput", "-v0")
    return env


async def converse(port: int, site_key: str, origin: str = ORIGIN) -> list[dict]:
    url = f"ws://127.0.0.1:{port}/ws/chat/{site_key}/"
    async with websockets.connect(url, origin=origin) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        ready = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "message", "id": "m1", "text": "Do you ship to Norway?"}))
        frames = [ready]
        while frames[-1]["type"] != "end":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return frames


def test_a_visitor_chats_through_daphne_with_the_site_createsite_made(live_server_env, fake_openai):
    fake_openai.queue(openai_reply(["Yes", ",", " we", " ship", " to", " Norway", "."], delay=0.01))
    key = create_site(live_server_env, fake_openai.origin, origin=ORIGIN)
    with daphne(live_server_env) as port:
        frames = asyncio.run(converse(port, key))
        ready, start, *deltas, end = frames
        assert ready["type"] == "ready" and start["type"] == "start"
        assert [d["text"] for d in deltas] == ["Yes", ",", " we", " ship", " to", " Norway", "."]
        assert end["status"] == "complete" and end["text"] == "Yes, we ship to Norway."

        widget = httpx.get(f"http://127.0.0.1:{port}/widget.js")
        assert widget.status_code == 200 and widget.headers["content-type"].startswith("text/javascript")
        assert PROVIDER_KEY not in widget.text


def test_daphne_refuses_a_handshake_from_a_foreign_origin(live_server_env, fake_openai):
    created = json.loads(manage(live_server_env, "createsite", "Shop", "--origin", ORIGIN))
    with daphne(live_server_env) as port:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            asyncio.run(converse(port, created["key"], origin="https://evil.example"))
        assert refused.value.response.status_code == 403
