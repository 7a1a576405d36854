"""The benchmarks' fake provider (bench/provider.py) answers as a real one would, so the figures are honest."""

from __future__ import annotations

import json

import httpx

from bench.provider import Stamped, respond
from tests.fakes.server import FakeServer, Recorded


def ask(**extra: object) -> list:
    body = {"messages": [{"role": "user", "content": "tokens=5 interval_ms=0"}], **extra}
    return respond(Recorded("POST", "/v1/chat/completions", {}, json.dumps(body).encode())).pieces


def finish_and_usage(pieces: list) -> tuple[str, int]:
    events = [json.loads(bytes(piece)[6:]) for piece in pieces if bytes(piece).startswith(b"data: {")]
    finish = next(c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"])
    return finish, next(e["usage"]["completion_tokens"] for e in events if e.get("usage"))


def test_it_streams_the_tokens_the_prompt_asks_for():
    pieces = ask(max_tokens=100)
    assert sum(isinstance(piece, Stamped) for piece in pieces) == 5
    assert finish_and_usage(pieces) == ("stop", 5)


def test_it_stops_at_the_requests_max_tokens_like_a_real_provider():
    pieces = ask(max_tokens=3)
    assert sum(isinstance(piece, Stamped) for piece in pieces) == 3
    assert finish_and_usage(pieces) == ("length", 3)


async def test_it_keeps_connections_alive_between_replies_and_still_sees_a_client_leave():
    """Real providers keep a connection open for the next request; the benchmarks' one does too, so neither
    the floor nor the relay pays a new connection per reply. A client leaving mid-stream is still seen."""
    server = FakeServer(respond, keep_alive=True).start()
    try:
        body = {"messages": [{"role": "user", "content": "tokens=3 interval_ms=0"}]}
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(3):
                reply = await client.post(f"{server.origin}/v1/chat/completions", json=body)
                assert reply.status_code == 200 and reply.text.endswith("data: [DONE]\n\n")
            slow = {"messages": [{"role": "user", "content": "tokens=50 interval_ms=100"}]}
            async with client.stream("POST", f"{server.origin}/v1/chat/completions", json=slow) as stream:
                async for _ in stream.aiter_raw():
                    break  # leave after the first piece
        assert server.wait_for(lambda: server.disconnects == 1)
        assert server.completed == 3 and len(server.requests) == 4
        assert server.connections == 1
    finally:
        server.stop()
