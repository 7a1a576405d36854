"""The benchmarks' bare relay (bench/bare.py) relays what the provider streams, in the chat socket's frames.

Its figures are the reference Parley's are compared with in docs/benchmarks.md, so it must do the same job
the load driver measures: every token, in order, then `end`.
"""

from __future__ import annotations

import json

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator

from bench.bare import application
from bench.provider import respond
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.asyncio


@pytest.fixture
def provider(monkeypatch):
    server = FakeServer(respond).start()
    monkeypatch.setenv("BARE_PROVIDER_URL", f"http://127.0.0.1:{server.port}/v1")
    yield server
    server.stop()


async def test_it_relays_every_token_in_order_then_ends(provider):
    socket = WebsocketCommunicator(application, "/ws/chat/any/")
    assert (await socket.connect())[0]
    await socket.send_to(json.dumps({"type": "hello"}))
    assert json.loads(await socket.receive_from()) == {"type": "ready"}
    await socket.send_to(json.dumps({"type": "message", "id": "b0", "text": "tokens=4 interval_ms=1"}))
    frames = [json.loads(await socket.receive_from(timeout=5)) for _ in range(5)]
    assert [frame["type"] for frame in frames] == ["delta"] * 4 + ["end"]
    stamps = [int(frame["text"]) for frame in frames[:4]]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4  # the provider's four tokens, in order
    assert frames[-1]["status"] == "complete"
    assert json.loads(provider.requests[-1].body)["messages"][-1]["content"] == "tokens=4 interval_ms=1"
    await socket.disconnect()


async def test_it_serves_no_pages():
    response = await HttpCommunicator(application, "GET", "/").get_response()
    assert response["status"] == 404
