"""CHAT_DELTA_COALESCE_MS: a fast upstream's tokens are joined into fewer frames, a slow one's are not."""

from __future__ import annotations

import pytest

from tests.conftest import chat, connect_and_hello, receive_until_end
from tests.fakes.formats import openai_reply

pytestmark = pytest.mark.django_db(transaction=True)

PIECES = [f" t{i}" for i in range(200)]


async def converse(site_key: str) -> list[dict]:
    async with chat(site_key) as ws:
        await connect_and_hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Go"})
        return await receive_until_end(ws)


async def test_a_burst_of_tokens_goes_out_in_fewer_frames_with_every_character_in_order(acme, fake_openai, settings):
    settings.CHAT_DELTA_COALESCE_MS = 50
    fake_openai.queue(openai_reply(PIECES))
    start, *deltas, end = await converse(acme.key)
    assert start["type"] == "start" and end["status"] == "complete"
    assert all(d["type"] == "delta" and d["message"] == start["message"] for d in deltas)
    assert "".join(d["text"] for d in deltas) == "".join(PIECES) == end["text"]
    assert len(deltas) < len(PIECES)


async def test_tokens_slower_than_the_window_each_get_their_own_frame(acme, fake_openai, settings):
    settings.CHAT_DELTA_COALESCE_MS = 5
    fake_openai.queue(openai_reply(["One", " two", " three"], delay=0.3))
    start, *deltas, end = await converse(acme.key)
    assert [d["text"] for d in deltas] == ["One", " two", " three"]
    assert end["text"] == "One two three"


async def test_without_a_window_each_token_is_its_own_frame(acme, fake_openai, settings):
    settings.CHAT_DELTA_COALESCE_MS = 0
    fake_openai.queue(openai_reply(PIECES[:50]))
    start, *deltas, end = await converse(acme.key)
    assert [d["text"] for d in deltas] == PIECES[:50]
