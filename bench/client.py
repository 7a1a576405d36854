"""The load driver: M concurrent conversations through Parley's WebSocket, or straight to the provider.

Run by bench/run.py in its own process; prints one JSON object with what it measured. Every loop is
bounded by a count and a deadline; all traffic goes to 127.0.0.1.

  python -m bench.client relay  --url ws://127.0.0.1:P/ws/chat/KEY/ --streams M --tokens N --interval-ms X
  python -m bench.client direct --url http://127.0.0.1:P/v1 --streams M --tokens N --interval-ms X
  python -m bench.client single --url ws://127.0.0.1:P/ws/chat/KEY/ --direct-url http://127.0.0.1:P/v1
                                 --messages K   (one conversation each way, their messages taking turns)
  python -m bench.client idle   --url ws://127.0.0.1:P/ws/chat/KEY/ --streams K   (holds K idle connections
                                 until a line arrives on stdin)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import websockets

ORIGIN = "https://bench.example"
DEADLINE_SECONDS = 120  # no run of the driver lasts longer than this
WARM_UP = 5  # rounds not counted where sides take turns: connections, statements and caches warm up in them


class Stream:
    """What one conversation saw: when it asked, when the first token came, and how late each token was."""

    def __init__(self) -> None:
        self.asked = 0
        self.first: int | None = None
        self.ttft: list[float] = []  # ms, one per message
        self.lateness: list[float] = []
        self.count = 0
        self.started = 0  # the first token of all
        self.last = 0
        self.error = ""

    def forget(self) -> None:
        """Drop what was measured so far (the warm-up)."""
        self.__init__()

    def token(self, text: str, now: int) -> None:
        for stamp in text.split():
            if self.first is None:
                self.first = now
                self.started = self.started or now
                self.ttft.append((now - self.asked) / 1e6)
            self.lateness.append((now - int(stamp)) / 1e6)
            self.count += 1
        self.last = now


def prompt(tokens: int, interval_ms: float) -> str:
    return f"tokens={tokens} interval_ms={interval_ms}"


async def relay_one(ws, stream: Stream, index: int, text: str) -> None:
    stream.asked, stream.first = time.monotonic_ns(), None
    await ws.send(json.dumps({"type": "message", "id": f"b{index}-{stream.asked}", "text": text}))
    while True:
        frame = json.loads(await ws.recv())
        now = time.monotonic_ns()
        if frame["type"] == "delta":
            stream.token(frame["text"], now)
        elif frame["type"] == "end":
            if frame["status"] != "complete":
                stream.error = frame["status"]
            return
        elif frame["type"] == "error":
            stream.error = frame["code"]
            if stream.first is None and frame["code"] in ("unavailable", "busy", "bad_request"):
                return  # refused before any reply started: no `end` follows


async def connect(url: str):
    ws = await websockets.connect(url, origin=ORIGIN, max_size=2**20, ping_interval=None, open_timeout=30)
    await ws.send(json.dumps({"type": "hello"}))
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready", ready
    return ws


async def open_all(url: str, count: int) -> list:
    """Open count connections, at most 50 handshakes at a time."""
    gate = asyncio.Semaphore(50)

    async def one():
        async with gate:
            return await connect(url)

    return await asyncio.gather(*(one() for _ in range(count)))


async def relay(args: argparse.Namespace) -> list[Stream]:
    sockets = await open_all(args.url, args.streams)
    streams = [Stream() for _ in sockets]
    text = prompt(args.tokens, args.interval_ms)

    async def run(index: int) -> None:
        # Arrivals spread evenly over the ramp, as visitors' messages are.
        await asyncio.sleep(args.ramp * index / max(1, args.streams))
        for _ in range(args.messages):
            await relay_one(sockets[index], streams[index], index, text)

    try:
        await asyncio.gather(*(run(index) for index in range(len(sockets))))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return streams


async def direct_one(client: httpx.AsyncClient, url: str, stream: Stream, text: str) -> None:
    """One request straight to the provider at url, as Parley would make it (the floor)."""
    body = {
        "model": "bench",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": text}],
    }
    stream.asked, stream.first = time.monotonic_ns(), None
    headers = {"Authorization": "Bearer sk-bench"}
    async with client.stream("POST", f"{url}/chat/completions", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = time.monotonic_ns()
            for choice in json.loads(line[6:]).get("choices") or []:
                if piece := (choice.get("delta") or {}).get("content"):
                    stream.token(piece, now)


async def direct(args: argparse.Namespace) -> list[Stream]:
    streams = [Stream() for _ in range(args.streams)]
    text = prompt(args.tokens, args.interval_ms)
    limits = httpx.Limits(max_connections=args.streams + 10, max_keepalive_connections=args.streams + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as client:

        async def run(index: int) -> None:
            await asyncio.sleep(args.ramp * index / max(1, args.streams))
            for _ in range(args.messages):
                await direct_one(client, args.url, streams[index], text)

        await asyncio.gather(*(run(index) for index in range(args.streams)))
    return streams


async def take_turns(turns: list[Callable[[int], Awaitable[None]]], rounds: int, pause: float = 0.0) -> None:
    """Run each turn once a round, the one going first changing every round, so that the machine's drift
    (this VM's speed moves from minute to minute) falls on every side alike."""
    for index in range(rounds):
        for turn in turns if index % 2 == 0 else turns[::-1]:
            await turn(index)
            await asyncio.sleep(pause)


async def single(args: argparse.Namespace) -> dict[str, list[Stream]]:
    """One conversation through the relay and one straight to the provider, their messages taking turns."""
    ws = await connect(args.url)
    relayed, straight = Stream(), Stream()
    text = prompt(args.tokens, args.interval_ms)
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        turns = [
            lambda index: relay_one(ws, relayed, index, text),
            lambda index: direct_one(client, args.direct_url, straight, text),
        ]
        await take_turns(turns, WARM_UP)
        relayed.forget()
        straight.forget()
        await take_turns(turns, args.messages)
    await ws.close()
    return {"relay": [relayed], "direct": [straight]}


async def idle(args: argparse.Namespace) -> dict:
    sockets = await open_all(args.url, args.streams)
    print(json.dumps({"open": len(sockets)}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {"closed": len(sockets)}


def summary(streams: list[Stream], started: int) -> dict:
    ttft = [value for s in streams for value in s.ttft]
    lateness = [value for s in streams for value in s.lateness]
    firsts = [s.started for s in streams if s.started]
    lasts = [s.last for s in streams if s.last]
    return {
        "ttft_ms": ttft,
        "lateness_ms": lateness,
        "chunks": sum(s.count for s in streams),
        "span_s": (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else 0.0,
        "wall_s": (time.monotonic_ns() - started) / 1e9,
        "errors": [s.error for s in streams if s.error],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["relay", "direct", "single", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--direct-url", default="", help="single: the provider's URL, for the floor")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--messages", type=int, default=1, help="messages each conversation sends in turn")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which conversations start")
    args = parser.parse_args()
    for url in (args.url, args.direct_url or args.url):
        assert url.startswith(("ws://127.0.0.1:", "http://127.0.0.1:")), "benchmarks talk to 127.0.0.1 only"
    started = time.monotonic_ns()
    async with asyncio.timeout(DEADLINE_SECONDS):
        if args.mode == "idle":
            result = await idle(args)
        elif args.mode == "single":
            result = {side: summary(streams, started) for side, streams in (await single(args)).items()}
        else:
            streams = await (relay(args) if args.mode == "relay" else direct(args))
            result = summary(streams, started)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
