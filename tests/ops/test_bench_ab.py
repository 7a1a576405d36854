"""bench/ab.py's driver: two servers' conversations take turns, in alternating order, warm-up not counted.

The order is what makes its comparison fair: the side that goes first each round changes, so neither
always meets the machine (or the fake provider) just after the other has worked.
"""

from __future__ import annotations

import json
import time

import pytest
import websockets

from bench.ab import WARM_UP, alternate

pytestmark = pytest.mark.asyncio


async def test_the_two_sides_take_turns_in_alternating_order_and_only_measured_messages_count():
    asked: list[str] = []

    def relay(side: str):
        async def handler(ws) -> None:
            async for raw in ws:
                if json.loads(raw)["type"] == "hello":
                    await ws.send(json.dumps({"type": "ready"}))
                    continue
                asked.append(side)
                await ws.send(json.dumps({"type": "delta", "message": "m", "text": str(time.monotonic_ns())}))
                await ws.send(json.dumps({"type": "end", "message": "m", "status": "complete", "text": ""}))

        return handler

    async with (
        websockets.serve(relay("a"), "127.0.0.1", 0) as a,
        websockets.serve(relay("b"), "127.0.0.1", 0) as b,
    ):
        urls = [f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/" for server in (a, b)]
        streams = await alternate(urls, messages=3)
    assert asked == ["a", "b", "b", "a"] * ((WARM_UP + 3) // 2) + ["a", "b"] * ((WARM_UP + 3) % 2)
    assert [len(stream.ttft) for stream in streams] == [3, 3]
    assert all(value > 0 for stream in streams for value in stream.ttft) and not any(s.error for s in streams)
