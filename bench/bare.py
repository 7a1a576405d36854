"""The bare relay: the least a WebSocket-to-provider relay on Parley's stack does, as the benchmarks' reference.

A raw ASGI application with no Django in it. It answers the chat socket's `hello` with `ready`, and for each
`message` streams a Chat Completions reply from the provider and writes each piece of text as a `delta`
frame, then `end`. It uses what Parley's OpenAI adapter uses (the shared httpx client on asyncio streams,
httpx-sse) and nothing else: no database, quota, claim, history, agents or logging, no coalescing, no
timeouts. What the benchmarks measure on it (bench/run.py serves it with daphne and with uvicorn, as it
serves Parley) is what the server, the WebSocket and httpx cost on the machine; Parley's figures minus
its figures are what Parley's own work costs.

Run: BARE_PROVIDER_URL=http://127.0.0.1:PORT/v1 daphne bench.bare:application
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

from httpx_sse import EventSource

from backend.providers.client import get_client

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def relay(text: str, send: Send) -> None:
    body = {
        "model": "bench",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": text}],
    }
    url = os.environ["BARE_PROVIDER_URL"].rstrip("/") + "/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Accept": "text/event-stream"}
    async with get_client().stream("POST", url, json=body, headers=headers) as response:
        async for event in EventSource(response).aiter_sse():
            if event.data == "[DONE]":
                continue  # read on to the body's end, so the connection is kept for the next request
            for choice in json.loads(event.data).get("choices") or []:
                if piece := (choice.get("delta") or {}).get("content"):
                    await send({"type": "websocket.send", "text": json.dumps({"type": "delta", "text": piece})})
    await send({"type": "websocket.send", "text": json.dumps({"type": "end", "status": "complete"})})


async def application(scope: dict, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (event := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"the bare relay serves WebSockets only"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (event := await receive())["type"] == "websocket.receive":
        frame = json.loads(event.get("text") or "{}")
        if frame.get("type") == "hello":
            await send({"type": "websocket.send", "text": json.dumps({"type": "ready"})})
        elif frame.get("type") == "message":
            await relay(str(frame.get("text", "")), send)
