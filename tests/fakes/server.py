"""A real HTTP/1.1 server on 127.0.0.1 that replays scripted provider responses.

It runs its own asyncio loop in a thread, so the code under test talks to it over real sockets through
the real httpx code path. Each wire format (OpenAI, Anthropic, Gemini, Ollama) is produced by the
formatters in tests/fakes/formats.py; this module only knows HTTP.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Reply:
    """A scripted answer: a status, headers, and body pieces written one by one with a delay between."""

    status: int = 200
    pieces: list[bytes] = field(default_factory=list)
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    first_byte_delay: float = 0.0
    delay: float = 0.0
    cut_after: int | None = None  # drop the connection after this many pieces, mid-stream


Responder = Callable[[Recorded], Reply]

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


class FakeServer:
    """keep_alive: serve further requests on a connection after a reply is written to its end, as real
    providers do (the benchmarks use it); by default each connection carries one reply and is closed."""

    def __init__(self, default: Responder, keep_alive: bool = False) -> None:
        self.default = default
        self.keep_alive = keep_alive
        self.script: deque[Reply | Responder] = deque()
        self.requests: list[Recorded] = []
        self.disconnects = 0  # clients that went away before a stream finished
        self.completed = 0  # streams written to the end
        self.connections = 0  # connections clients opened
        self._handlers: set[asyncio.Task] = set()
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FakeServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server:
                self._server.close()
            # Connections still open (kept alive, or a client that never read its reply) end here, in the
            # loop, rather than when the stopped loop's tasks are collected.
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._changed:
            self.script.clear()
            self.requests.clear()
            self.disconnects = 0
            self.completed = 0
            self.connections = 0

    def queue(self, *replies: Reply | Responder) -> None:
        self.script.extend(replies)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- HTTP ------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = b""  # a byte of the next request, read while watching for the client's leaving
        with self._changed:
            self.connections += 1
        handler = asyncio.current_task()
        self._handlers.add(handler)
        try:
            while True:
                try:
                    request = await self._read_request(reader, first)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                first = await self._answer(request, reader, writer)
                if first is None:
                    return
        except asyncio.CancelledError:
            return  # stop(): end quietly (asyncio logs a connection task that ends cancelled)
        finally:
            self._handlers.discard(handler)
            writer.close()

    async def _answer(
        self, request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """Write the reply; return None to close the connection, else what was read of the next request."""
        with self._changed:
            self.requests.append(request)
            item = self.script.popleft() if self.script else self.default
            self._changed.notify_all()
        reply = item(request) if callable(item) else item
        # Resolves when the client closes its side: it sends nothing else while it waits for the reply.
        gone = asyncio.ensure_future(reader.read(1))
        outcome = "gone"  # until the stream is written to its end, or cut on purpose
        try:
            if reply.first_byte_delay:
                await asyncio.wait([gone], timeout=reply.first_byte_delay)
                if gone.done():
                    return None
            head = [
                f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}",
                f"Content-Type: {reply.content_type}",
                "Transfer-Encoding: chunked",
                "Connection: keep-alive" if self.keep_alive else "Connection: close",
            ]
            head += [f"{k}: {v}" for k, v in reply.headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            for index, piece in enumerate(reply.pieces):
                if reply.cut_after is not None and index >= reply.cut_after:
                    outcome = "cut"
                    writer.transport.abort()
                    return None
                if index and reply.delay:
                    await asyncio.wait([gone], timeout=reply.delay)
                if gone.done():
                    return None
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            outcome = "completed"
        except ConnectionError:
            return None
        finally:
            with self._changed:
                if outcome == "completed":
                    self.completed += 1
                elif outcome == "gone":
                    self.disconnects += 1
                self._changed.notify_all()
            gone.cancel()
        if not self.keep_alive:
            return None
        # The client may have sent its next request already: the watch may hold its first byte.
        await asyncio.gather(gone, return_exceptions=True)
        if gone.cancelled():
            return b""
        if gone.exception() is not None:
            return None
        return gone.result() or None  # b"": the client closed the connection

    async def _read_request(self, reader: asyncio.StreamReader, first: bytes = b"") -> Recorded:
        line = (first + await reader.readuntil(b"\r\n")).decode("latin-1").strip()
        method, path, _ = line.split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = (await reader.readuntil(b"\r\n")).decode("latin-1")
            if raw == "\r\n":
                break
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        return Recorded(method, path, headers, body)


def fixtures(responder: Responder, session_name: str) -> tuple[Callable, Callable]:
    """Return pytest fixtures for a conftest: one server for the session, and the same server reset per test.

        openai_server, fake_openai = fixtures(openai_default, "openai_server")

    The first is named `session_name` (assign it to that name); the second takes the name it is assigned to.
    A test that uses the second starts with an empty script, no recorded requests and zeroed counters.
    """

    @pytest.fixture(scope="session", name=session_name)
    def session_server() -> Iterator[FakeServer]:
        server = FakeServer(responder).start()
        yield server
        server.stop()

    @pytest.fixture
    def fresh(request: pytest.FixtureRequest) -> FakeServer:
        server = request.getfixturevalue(session_name)
        server.reset()
        return server

    return session_server, fresh
