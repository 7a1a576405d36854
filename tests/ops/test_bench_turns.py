"""Sides that take turns (bench/ab.py's two servers; the single conversation's relay and floor in bench/run.py).

The order is what makes their comparison fair: the side that goes first each round changes, so neither
always meets the machine (or the fake provider) just after the other has worked; warm-up rounds are not
counted.
"""

from __future__ import annotations

import argparse
import json
import time

import pytest
import websockets

from bench.ab import alternate
from bench.client import WARM_UP, single
from bench.provider import respond
from tests.fakes.server import FakeServer, Recorded, Reply

pytestmark = pytest.mark.asyncio


def relay(side: str, asked: list[str]):
    """A stand-in for a relay: answers each message with one token stamped now, noting which side was asked."""

    async def handler(ws) -> None:
        async for raw in ws:
            if json.loads(raw)["type"] == "hello":
                await ws.send(json.dumps({"type": "ready"}))
                continue
            asked.append(side)
            await ws.send(json.dumps({"type": "delta", "message": "m", "text": str(time.monotonic_ns())}))
            await ws.send(json.dumps({"type": "end", "message": "m", "status": "complete", "text": ""}))

    return handler


def in_turns(first: str, second: str, rounds: int) -> list[str]:
    """Who is asked, round by round, when the one going first changes every round: a b, b a, a b…"""
    return [side for index in range(rounds) for side in ((first, second) if index % 2 == 0 else (second, first))]


def port(server) -> int:
    return server.sockets[0].getsockname()[1]


async def test_two_servers_take_turns_in_alternating_order_and_only_measured_messages_count():
    asked: list[str] = []
    async with (
        websockets.serve(relay("a", asked), "127.0.0.1", 0) as a,
        websockets.serve(relay("b", asked), "127.0.0.1", 0) as b,
    ):
        urls = [f"ws://127.0.0.1:{port(server)}/" for server in (a, b)]
        streams = await alternate(urls, messages=3)
    assert asked == in_turns("a", "b", WARM_UP) + in_turns("a", "b", 3)
    assert [len(stream.ttft) for stream in streams] == [3, 3]
    assert all(value > 0 for stream in streams for value in stream.ttft) and not any(s.error for s in streams)


async def test_the_single_conversation_takes_turns_with_the_floor_and_counts_each_side_apart():
    asked: list[str] = []

    def respond_noting(request: Recorded) -> Reply:
        asked.append("direct")
        return respond(request)

    provider = FakeServer(respond_noting, keep_alive=True).start()
    args = argparse.Namespace(
        url="", direct_url=f"http://127.0.0.1:{provider.port}/v1", tokens=2, interval_ms=1.0, messages=3
    )
    try:
        async with websockets.serve(relay("relay", asked), "127.0.0.1", 0) as stand_in:
            args.url = f"ws://127.0.0.1:{port(stand_in)}/"
            streams = await single(args)
    finally:
        provider.stop()
    assert asked == in_turns("relay", "direct", WARM_UP) + in_turns("relay", "direct", 3)
    [relayed], [straight] = streams["relay"], streams["direct"]
    assert len(relayed.ttft) == 3 and len(straight.ttft) == 3  # the warm-up rounds are forgotten
    assert len(straight.lateness) == 3 * 2  # both of the provider's tokens, each time
