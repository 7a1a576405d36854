"""The reply claim and the visitor's rate-limit counters are taken together (one Redis round trip); a claim
says when an earlier one on the same message was released lately (tests/ops/test_history_check.py: such a
resend reads before calling)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from backend.ops import claims
from backend.ops.redis_client import redis_client
from backend.quotas import ratelimit


def claim(
    conversation: uuid.UUID, client_id: str, count: list[str] | None = None, token: str = "first"
) -> claims.Claimed | None:
    """Claim for the connection of `token` ("first" unless another connection is meant)."""
    return asyncio.run(claims.claim(conversation, client_id, token, count or []))


def release(conversation: uuid.UUID, client_id: str, token: str = "first") -> None:
    asyncio.run(claims.release(conversation, client_id, token))


def test_a_message_answered_on_another_connection_is_not_counted_against_the_visitor():
    conversation, visitor = uuid.uuid4(), uuid.uuid4().int % 10**9
    count = ratelimit.message_count(
        f"claims-test-{uuid.uuid4().hex}", visitor, "192.0.2.7", visitor_limit=2, ip_limit=10
    )
    assert claim(conversation, "m1", count=count.keys).counts == [1, 1]
    # The resend that waits for the first connection's reply counts nothing, however often it asks.
    assert claim(conversation, "m1", count=count.keys, token="second") is None
    assert claim(conversation, "m1", count=count.keys, token="second") is None
    release(conversation, "m1")
    assert claim(conversation, "m2", count=count.keys).counts == [2, 2]
    assert count.retry_after([2, 2]) is None
    counts = claim(conversation, "m3", count=count.keys).counts
    assert counts == [3, 3] and count.retry_after(counts) == count.wait
    for client_id in ("m2", "m3"):
        release(conversation, client_id)


def test_a_claim_says_when_an_earlier_claim_on_the_same_message_was_released():
    conversation = uuid.uuid4()
    first = claim(conversation, "m1")
    assert first is not None and not first.stale
    release(conversation, "m1")
    # The earlier claim may have saved a reply that a read made before this claim's answer missed.
    again = claim(conversation, "m1")
    assert again is not None and again.stale
    other = claim(conversation, "m2")
    assert other is not None and not other.stale
    for client_id in ("m1", "m2"):
        release(conversation, client_id)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs the Redis channel layer (REDIS_URL)")
def test_a_claim_still_works_after_redis_forgot_its_scripts():
    """A restarted Redis has no scripts: the claim sent ahead finds none, so it runs again with the script."""
    conversation, visitor = uuid.uuid4(), uuid.uuid4().int % 10**9
    count = ratelimit.message_count(f"claims-test-{uuid.uuid4().hex}", visitor, "192.0.2.8", 10, 10)
    redis_client().script_flush()
    first = claim(conversation, "m1", count=count.keys)
    assert first is not None and not first.stale
    assert first.counts == [1, 1]  # run once: the message counted once
    assert claim(conversation, "m1", token="second") is None  # taken, by the first connection
    release(conversation, "m1")


def test_a_connection_takes_its_own_claim_again_and_releases_only_its_own():
    """A claim whose answer was lost is the sending connection's to take again; and a reply that outlived its
    claim does not drop the claim another connection took since."""
    conversation = uuid.uuid4()
    assert claim(conversation, "m1") is not None
    assert claim(conversation, "m1") is not None  # the same connection, sending the message again
    assert claim(conversation, "m1", token="second") is None
    release(conversation, "m1", token="second")  # not its claim: it stays
    assert claim(conversation, "m1", token="third") is None
    release(conversation, "m1")
    assert claim(conversation, "m1", token="second") is not None
    release(conversation, "m1", token="second")


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs the Redis channel layer (REDIS_URL)")
def test_more_claims_at_once_than_redis_py_s_default_pool_holds_all_get_their_answer(settings):
    """One event loop starts every reply of its process: 150 at once are not refused for want of connections."""
    settings.REDIS_MAX_CONNECTIONS = 120  # fewer than the claims: the last ones wait for a connection
    conversation = uuid.uuid4()

    async def burst() -> list:
        return await asyncio.gather(*(claims.claim(conversation, f"m{n}", "first", []) for n in range(150)))

    answers = asyncio.run(burst())
    assert all(isinstance(answer, claims.Claimed) for answer in answers)

    async def release_all() -> None:
        await asyncio.gather(*(claims.release(conversation, f"m{n}", "first") for n in range(150)))

    asyncio.run(release_all())
