"""The reply claim and the visitor's rate-limit counters are taken together (one Redis round trip)."""

from __future__ import annotations

import asyncio
import uuid

from backend.ops import claims
from backend.quotas import ratelimit


def test_a_message_answered_on_another_connection_is_not_counted_against_the_visitor():
    conversation, visitor = uuid.uuid4(), uuid.uuid4().int % 10**9
    count = ratelimit.message_count(
        f"claims-test-{uuid.uuid4().hex}", visitor, "192.0.2.7", visitor_limit=2, ip_limit=10
    )
    assert claims.claim(conversation, "m1", count=count.keys) == [1, 1]
    # The resend that waits for the first connection's reply counts nothing, however often it asks.
    assert claims.claim(conversation, "m1", count=count.keys) is None
    assert claims.claim(conversation, "m1", count=count.keys) is None
    asyncio.run(claims.release(conversation, "m1"))
    assert claims.claim(conversation, "m2", count=count.keys) == [2, 2]
    assert count.retry_after([2, 2]) is None
    counts = claims.claim(conversation, "m3", count=count.keys)
    assert counts == [3, 3] and count.retry_after(counts) == count.wait
    for client_id in ("m2", "m3"):
        asyncio.run(claims.release(conversation, client_id))
