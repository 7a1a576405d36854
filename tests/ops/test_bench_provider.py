"""The benchmarks' fake provider (bench/provider.py) answers as a real one would, so the figures are honest."""

from __future__ import annotations

import json

from bench.provider import Stamped, respond
from tests.fakes.server import Recorded


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
