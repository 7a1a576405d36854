"""The fake provider of the benchmarks: tests/fakes/server.py streaming N stamped tokens at a set rate.

Each token's text is the CLOCK_MONOTONIC time (ns) at which the provider writes it. CLOCK_MONOTONIC is
shared by every process on the machine, so a client can compute how late each token reached it, the
same way whether it called the provider directly or went through Parley.

The prompt's last user message says what to stream: "tokens=N interval_ms=X". As a real provider does, it
stops at the request's max_tokens (finish reason "length").

Run: python -m bench.provider PORT_FILE   (writes the port it listens on into PORT_FILE)
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

from tests.fakes.formats import sse
from tests.fakes.server import FakeServer, Recorded, Reply

BASE = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764000000, "model": "bench"}


class Stamped:
    """An SSE chunk rendered when the server writes it (it asks for len() first), carrying that moment."""

    __slots__ = ("_bytes",)

    def __init__(self) -> None:
        self._bytes: bytes | None = None

    def _render(self) -> bytes:
        if self._bytes is None:
            delta = {"content": f"{time.monotonic_ns()} "}
            self._bytes = sse(BASE | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        return self._bytes

    def __len__(self) -> int:
        return len(self._render())

    def __bytes__(self) -> bytes:
        return self._render()


def parse_spec(text: str) -> tuple[int, float]:
    match = re.search(r"tokens=(\d+) interval_ms=([\d.]+)", text)
    if not match:
        return 5, 0.0
    return min(int(match[1]), 100_000), float(match[2]) / 1000


def stamped_stream(tokens: int, interval: float, finish: str = "stop") -> Reply:
    pieces: list = [sse(BASE | {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})]
    pieces += [Stamped() for _ in range(tokens)]
    pieces.append(sse(BASE | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    pieces.append(sse(BASE | {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": tokens}}))
    pieces.append(sse("[DONE]"))
    # The first piece goes out at once; `delay` separates the following ones.
    return Reply(pieces=pieces, delay=interval)


def respond(request: Recorded) -> Reply:
    body = request.json()
    tokens, interval = parse_spec(body["messages"][-1]["content"])
    limit = body.get("max_tokens") or tokens
    return stamped_stream(min(tokens, limit), interval, "stop" if tokens <= limit else "length")


def forget_requests(server: FakeServer) -> None:
    """Drop recorded requests every second, so a long benchmark does not grow this process."""
    while True:
        time.sleep(1)
        server.requests.clear()


def main() -> None:
    server = FakeServer(respond, keep_alive=True).start()  # as real providers keep connections open
    threading.Thread(target=forget_requests, args=(server,), daemon=True).start()
    Path(sys.argv[1]).write_text(json.dumps({"port": server.port}))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
