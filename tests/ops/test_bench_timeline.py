"""bench/timeline.py's timers: put around the application's functions, they time each step of a reply from
the message frame's arrival, one row a message."""

from __future__ import annotations

import pytest

from bench.timeline import STEPS, Timeline, install, summary
from tests.fakes.formats import openai_reply
from tests.fakes.server import Reply
from tests.quotas.conftest import chat_from, hello

pytestmark = pytest.mark.django_db(transaction=True)

# The steps of every reply, in their order; the claim's script and the guess only run with Redis, which moves
# the history read from before the reply's preparation to after its request.
CHAIN = ["reply prepared", "reply task running", "request to httpx", "request written"]
READ = ["read started", "read done"]


async def ask(ws, client_id: str) -> None:
    await ws.send_json_to({"type": "message", "id": client_id, "text": "Hello?"})
    while (await ws.receive_json_from(timeout=10))["type"] != "end":
        pass


async def test_each_reply_gets_a_row_of_its_steps_in_order(acme, fake_openai, monkeypatch, settings):
    rows: list[dict[str, float]] = []
    install(Timeline(rows.append), monkeypatch.setattr)
    async with chat_from(acme.key) as ws:
        await hello(ws)
        for n in range(4):
            await ask(ws, f"c{n}")
    # A message's row is written when the next one arrives: the last one's is not.
    assert len(rows) == 3
    # The first reservation of a site's period reads its totals (the Redis ledger's seed): that reply reads first.
    for row in rows[1:]:
        assert row["frame received"] == 0
        order = [*CHAIN, *READ] if settings.REDIS_URL else [*READ, *CHAIN]
        times = [row[step] for step in [*order, "first delta"]]
        assert times == sorted(times) and times[0] > 0
        if settings.REDIS_URL:
            assert 0 < row["guess made"] < row["claim's script sent"] < row["Redis answered"] < row["reply prepared"]
    table = summary(rows)
    assert table.splitlines()[0] == "| step | p25 | p50 | p75 | messages |"
    assert {line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[2:]} <= {s for s, _ in STEPS}


async def test_a_frame_other_than_a_message_during_a_reply_leaves_its_row_whole(acme, fake_openai, monkeypatch):
    rows: list[dict[str, float]] = []
    install(Timeline(rows.append), monkeypatch.setattr)
    fake_openai.queue(Reply(pieces=openai_reply(["Hi"]).pieces, first_byte_delay=0.3))
    async with chat_from(acme.key) as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": "c1", "text": "Hello?"})
        await ws.send_json_to({"type": "ping"})  # while the provider thinks
        frames = [await ws.receive_json_from(timeout=10)]
        while frames[-1]["type"] != "end":
            frames.append(await ws.receive_json_from(timeout=10))
        assert "pong" in [frame["type"] for frame in frames]
        await ask(ws, "c2")
    assert len(rows) == 1 and {*CHAIN, *READ} <= rows[0].keys()
    assert rows[0]["first delta"] >= 300 > rows[0]["request written"]
