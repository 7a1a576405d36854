"""Under daphne, API bodies over 1 MiB are refused before Django spools them to disk."""

from __future__ import annotations

import asyncio
import json

import pytest

from backend.asgi import application
from backend.tickets.intake import MAX_BODY_BYTES
from tests.tickets.conftest import signed_headers

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 * 1024


class Client:
    """Drive the real ASGI application with a body sent in chunks, counting what it reads."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.read < len(self.chunks):
            self.read += 1
            return {
                "type": "http.request",
                "body": self.chunks[self.read - 1],
                "more_body": self.read < len(self.chunks),
            }
        await asyncio.Future()  # the client stays connected until the response is sent
        raise AssertionError("unreachable")

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    async def post(self, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        await application(scope, self.receive, self.send)
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return start["status"], json.loads(body)


async def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body():
    client = Client([b"x" * CHUNK])
    status, body = await client.post(
        "/api/sites/any/tickets/", {"content-length": str(MAX_BODY_BYTES + 1), "host": "testserver"}
    )
    assert (status, body["error"]) == (413, "too_large")
    assert client.read == 0


async def test_a_chunked_body_over_the_limit_is_refused_after_reading_just_past_it():
    chunks = [b"x" * CHUNK] * (MAX_BODY_BYTES // CHUNK * 4)  # 4 MiB offered
    client = Client(chunks)
    status, _ = await client.post("/api/sites/any/tickets/", {"host": "testserver"})
    assert status == 413
    assert client.read * CHUNK <= MAX_BODY_BYTES + CHUNK


async def test_a_body_within_the_limit_reaches_the_view_intact(helpdesk):
    raw = b'{"text": "unterminated'
    chunks = [raw[:5], raw[5:]]
    headers = {"host": "testserver", "content-type": "application/json", **signed_headers(helpdesk.webhook_secret, raw)}
    status, body = await Client(chunks).post(f"/api/sites/{helpdesk.key}/tickets/", headers)
    # The signature covers the whole body, so a 400 about the JSON proves every byte arrived.
    assert (status, body["error"]) == (400, "invalid_json")
