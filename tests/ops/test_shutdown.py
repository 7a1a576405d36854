"""SIGTERM while replies stream: daphne cancels every consumer; each reply must still be saved, stopped."""

from __future__ import annotations

import asyncio
import contextlib

import websockets

from tests.fakes.formats import openai_reply
from tests.ops.servers import REPLIES, Daphne, Visitor, query

WORDS = [f" word{i}" for i in range(400)]


async def stream_then_terminate(server: Daphne, site_key: str, visitors: int) -> list[tuple[list[str], list[dict]]]:
    """Start one slow reply per visitor, read a few deltas of each, SIGTERM the server, keep reading."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Visitor(server.url(site_key))) for _ in range(visitors)]
        seen: list[list[str]] = []
        for index, client in enumerate(clients):
            await client.send({"type": "message", "id": f"m{index}", "text": "Tell me everything."})
            assert (await client.receive())["type"] == "start"
            seen.append([(await client.receive())["text"] for _ in range(3)])
        assert await asyncio.to_thread(server.terminate) == 0
        results = []
        for client, texts in zip(clients, seen, strict=True):
            after: list[dict] = []
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                while True:
                    after.append(await client.receive(timeout=5))
            results.append((texts, after))
        return results


def test_sigterm_while_replies_stream_saves_each_as_stopped_with_its_partial_text(
    tmp_path, server_db, shop, fake_openai
):
    fake_openai.queue(*[openai_reply(WORDS, delay=0.05) for _ in range(3)])
    server = Daphne(server_db, tmp_path / "daphne.log").start()
    try:
        results = asyncio.run(stream_then_terminate(server, shop, visitors=3))
    finally:
        server.stop()
    rows = query(server_db, REPLIES)
    replies = [row for row in rows if row[0] == "assistant"]
    assert sorted(row[3] for row in rows if row[0] == "user") == ["m0", "m1", "m2"]
    assert len(replies) == 3, server.log()
    full = "".join(WORDS)
    for _, text, status, _ in replies:
        assert status == "stopped"
        assert text and full.startswith(text) and len(text) < len(full)
    for texts, after in results:
        # Every delta the visitor saw is in a saved reply: nothing they read is lost.
        assert any(text.startswith("".join(texts)) for _, text, _, _ in replies)
        ends = [frame for frame in after if frame["type"] == "end"]
        assert len(ends) == 1 and ends[0]["status"] == "stopped", after
        assert ends[0]["text"] in [text for _, text, _, _ in replies]
    assert "Traceback" not in server.log()
