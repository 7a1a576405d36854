"""A scripted chat server: speaks docs/protocol.md over a real WebSocket and serves the built widget.

It fakes the server boundary for frames whose server side other branches build (handoff, status, agent
messages, feedback, sources, quotas, rate limits), and for failures that are hard to provoke in the app
(a connection dropped mid-reply). Each test sets what the server answers; every frame received is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.processes import ROOT

WIDGET = ROOT / "widget" / "dist" / "parley.js"
# A 1×1 PNG, for the avatar.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a7d7a40000000049454e44ae426082"
)

Answer = list[dict | float]  # frames to send, and pauses (seconds) between them

# The server's thread may see a browser's connection close after the test has ended and pytest has closed
# the stream its log capture wrote to: its routine "connection closed" would then be a logging error.
# Warnings and errors still show.
SERVER_LOG = logging.getLogger("tests.browser.scripted")
SERVER_LOG.setLevel(logging.WARNING)


class ScriptedServer:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.origin = f"http://localhost:{self.port}"
        self.reset()

    def reset(self) -> None:
        with self._changed:
            self.received: list[dict] = []
            self.hellos = 0
            self.refuse = False
            self.config: dict = {"title": "Help desk", "greeting": "Hello from the script", "available": True}
            self.history: list[dict] = []
            self.answers: dict[str, Callable[[dict], Answer]] = {"message": self.echo}
            self.connections: list[ServerConnection] = []

    @staticmethod
    def echo(frame: dict) -> Answer:
        reply = f"r-{frame['id']}"
        return [
            {"type": "start", "reply_to": frame["id"], "message": reply},
            {"type": "delta", "message": reply, "text": "Echo: "},
            {"type": "delta", "message": reply, "text": frame["text"]},
            {"type": "end", "message": reply, "status": "complete", "text": "Echo: " + frame["text"]},
        ]

    async def _start(self) -> int:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._http, logger=SERVER_LOG)
        return self._server.sockets[0].getsockname()[1]

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?")[0]
        if path == "/widget.js":
            return Response(200, "OK", Headers({"Content-Type": "text/javascript"}), WIDGET.read_bytes())
        if path == "/avatar.png":
            return Response(200, "OK", Headers({"Content-Type": "image/png"}), PIXEL)
        if self.refuse:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "down for the test\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        playing: asyncio.Task | None = None
        async for raw in ws:
            frame = json.loads(raw)
            with self._changed:
                self.received.append(frame)
                self._changed.notify_all()
            kind = frame.get("type")
            if kind == "hello":
                self.hellos += 1
                answer: Answer = [
                    {
                        "type": "ready",
                        "visitor": "scripted-visitor-token",
                        "conversation": "conv-1",
                        "history": self.history,
                        "config": self.config,
                    }
                ]
            elif kind == "stop" and playing and not playing.done():
                playing.cancel()
                answer = [{"type": "end", "message": "slow", "status": "stopped", "text": "Counting: one"}]
            else:
                answer = self.answers.get(kind, lambda f: [])(frame)
            # Played in a task, so frames such as "stop" are read while a reply streams.
            playing = asyncio.create_task(self._play(ws, answer))

    async def _play(self, ws: ServerConnection, answer: Answer) -> None:
        for item in answer:
            if isinstance(item, float | int):
                await asyncio.sleep(item)
            elif item == {"drop": True}:
                await ws.close()
                return
            else:
                await ws.send(json.dumps(item))

    # -- called from the test thread -------------------------------------------------------------------
    def push(self, *frames: dict) -> None:
        """Send frames to the newest connection, as the server would on its own initiative."""
        asyncio.run_coroutine_threadsafe(self._play(self.connections[-1], list(frames)), self._loop).result(5)

    def frames(self, kind: str) -> list[dict]:
        with self._changed:
            return [f for f in self.received if f.get("type") == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len([f for f in self.received if f.get("type") == kind]) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {count} {kind!r} frame(s): {self.received}"
                self._changed.wait(remaining)
        return self.frames(kind)

    def tag(self, attrs: str = "") -> str:
        return f'<script src="{self.origin}/widget.js" data-site="scripted" {attrs} async></script>'

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
