"""Real servers for process-level tests: daphne with a log file, a private redis-server, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import websockets

from tests.processes import ROOT, free_port, manage, wait_for_port


class Daphne:
    """daphne serving the app on a free port, its log kept in a file the test can read."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        self.args = list(args)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> Daphne:
        self.launch()
        wait_for_port(self.port)
        return self

    def launch(self) -> None:
        """Start the process without waiting for it to listen (start several, then wait for each)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
                + ["--websocket-max-message-size", "65536", *self.args, "backend.asgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def terminate(self, timeout: float = 20) -> int:
        """Send SIGTERM and wait for the process to exit; return its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, site_key: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/{site_key}/"

    def __enter__(self) -> Daphne:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A private redis-server on a free port that a test may stop and start again (never the shared one)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class TcpProxy:
    """Forward 127.0.0.1:port to a target; `cut()` drops every connection and refuses new ones until `restore()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.open:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            self.open = False
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        with self._lock:
            self.open = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


def query(env: dict[str, str], code: str) -> object:
    """Run Python in the server's Django (manage.py shell) and return what it prints as JSON."""
    return json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])


REPLIES = (
    "import json; from backend.chat.models import Message; "
    "print(json.dumps([[m.role, m.text, m.status, m.client_id] for m in Message.objects.order_by('created')]))"
)


class Visitor:
    """A real WebSocket client speaking the chat protocol, with a bounded wait on every frame."""

    def __init__(self, url: str, origin: str = "https://shop.example", token: str | None = None) -> None:
        self.url = url
        self.origin = origin
        self.token = token
        self.ws: websockets.ClientConnection | None = None
        self.ready: dict = {}

    async def __aenter__(self) -> Visitor:
        self.ws = await websockets.connect(self.url, origin=self.origin)
        await self.send({"type": "hello", "visitor": self.token})
        self.ready = await self.receive()
        assert self.ready["type"] == "ready", self.ready
        self.token = self.ready["visitor"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def receive(self, timeout: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def ask(self, client_id: str, text: str, timeout: float = 10) -> list[dict]:
        """Send a message and collect frames up to its `end`, or up to an error that ends it."""
        await self.send({"type": "message", "id": client_id, "text": text})
        frames = []
        while True:
            frame = await self.receive(timeout)
            frames.append(frame)
            if frame["type"] == "end" or (frame["type"] == "error" and len(frames) == 1):
                return frames


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Poll a condition, bounded in time (for outside processes that cannot notify us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
