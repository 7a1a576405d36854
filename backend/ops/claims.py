"""Who is answering a visitor message right now, agreed between processes through Redis.

A visitor who loses the connection mid-reply reconnects, perhaps to another process, and resends the
message. Until the first process has saved its (stopped) reply, the resend would find no reply and ask
the provider again. A claim per message, taken before a reply starts and dropped once it is saved,
makes the resend wait for the stored reply instead. With the in-memory channel layer there is only one
process, so the claims live in it.
"""

from __future__ import annotations

import asyncio
import threading

from channels.layers import get_channel_layer
from django.conf import settings

from backend.ops.redis_client import redis_client
from backend.quotas import ratelimit

# A reply that streams longer than this loses its claim; a crashed process's claims expire after it.
CLAIM_SECONDS = 180

_local: set[str] = set()
_scripts: dict[int, object] = {}  # the registered script, per client
_local_lock = threading.Lock()  # claims are taken in worker threads


def _key(conversation_id: object, client_id: str) -> str:
    prefix = getattr(get_channel_layer(), "prefix", "parley")
    return f"{prefix}:reply:{conversation_id}:{client_id}"


def _on_redis() -> bool:
    """Whether the channel layer is Redis's: then the processes agree through it, else there is one."""
    return hasattr(get_channel_layer(), "consistent_hash")


def _redis(key: str):  # noqa: ANN202 - a redis.asyncio.Redis from the channel layer's own pool, or None
    if not _on_redis():
        return None
    layer = get_channel_layer()
    return layer.connection(layer.consistent_hash(key))


# KEYS: the claim, then counters to add one to. ARGV: the claim's seconds, the counters' seconds.
# Returns false when the claim is held elsewhere (nothing counted), else the counters' new values.
CLAIM_AND_COUNT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
local counts = {}
for i = 2, #KEYS do
  counts[i - 1] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return counts
"""


def claim(conversation_id: object, client_id: str, count: list[str] | None = None) -> list[int] | None:
    """Take the right to answer this message and add one to each `count` counter (ratelimit.hits).

    Returns the counters' new values, or None (nothing counted) when another connection holds the claim.
    Called in the consumer's pre-call trip to a worker thread: with Redis, one round trip for both.
    Raises Redis's error when it is down: replies wait until it is back.
    """
    key, count = _key(conversation_id, client_id), count or []
    client = redis_client() if _on_redis() else None
    if client is None:
        with _local_lock:
            if key in _local:
                return None
            _local.add(key)
        return ratelimit.hits(count)
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(CLAIM_AND_COUNT)
    counts = script(keys=[key, *count], args=[CLAIM_SECONDS, ratelimit.MESSAGE_COUNT_TTL])
    return None if counts is None else [int(value) for value in counts]


async def release(conversation_id: object, client_id: str) -> None:
    key = _key(conversation_id, client_id)
    redis = _redis(key)
    if redis is None:
        with _local_lock:
            _local.discard(key)
        return
    async with asyncio.timeout(settings.HEALTH_CHECK_TIMEOUT):
        await redis.delete(key)
