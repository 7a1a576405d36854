"""Bound request bodies on the API before Django spools them: Django's ASGI handler reads bodies whole."""

from __future__ import annotations

import json
from collections import deque

from backend.tickets.intake import MAX_BODY_BYTES


async def _too_large(send, max_bytes: int) -> None:
    body = json.dumps({"error": "too_large", "message": f"the body must be at most {max_bytes} bytes"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413 to API requests whose body is over the limit, reading no more than the limit plus a chunk."""

    def __init__(self, app, prefix: str = "/api/", max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.prefix = prefix
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        buffered: deque[dict] = deque()
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await _too_large(send, self.max_bytes)
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return buffered.popleft() if buffered else await receive()

        return await self.app(scope, replay, send)
