"""The Redis channel layer, asking first, in one round trip, which of an event's groups anyone is in, and
letting a closed connection's listener go at once.

Every stored message and state change is announced to three groups of agent pages (agents/events.py),
and most of the time nobody has those pages open. channels_redis's group_send spends two round trips to
Redis on a group even when it is empty: about a tenth of a reply's server CPU went on announcing it
(docs/benchmarks.md). Here one pipeline expires and counts the members of all the groups, and only the
groups with members are sent to, by channels_redis's own group_send. That repeats the expiry and reads
the members again, so a group someone is in costs one round trip more than before; the sending itself
stays channels_redis's code.

When a visitor leaves, channels cancels the consumer's listener. On Python 3.11, a cancellation that
arrives just as redis-py's asyncio.wait_for around a send finishes is lost (CPython gh-86296, fixed in
3.12): the listener then went on waiting in BZPOPMIN, 5 seconds at a time, until daphne killed the
connection's application after 10 seconds with a warning, and a test's next event loop found the layer's
receive lock still bound to the closed one.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from channels_redis.core import RedisChannelLayer


class GroupCheckingRedisChannelLayer(RedisChannelLayer):
    # How long one BZPOPMIN waits (channels_redis: 5 s): the longest a lost cancellation keeps a listener.
    # One process's listeners share one BZPOPMIN, so a shorter wait costs one command a second per process.
    brpop_timeout = 1

    async def _brpop_with_clean(
        self,
        index: int,
        channel: str,
        timeout: float,  # noqa: ASYNC109 - channels_redis's signature
    ) -> bytes | None:
        # A cancellation requested but lost below (the task still counts it) ends the receive here; a
        # message already popped is returned as usual, so nothing is dropped.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        member = await super()._brpop_with_clean(index, channel, timeout)
        if member is None and task is not None and task.cancelling():
            raise asyncio.CancelledError
        return member

    async def group_send_many(self, events: list[tuple[str, dict]]) -> None:
        """Send each (group, message), skipping the groups nobody is in; one round trip per Redis host for that."""
        by_host: dict[int, list[tuple[str, dict]]] = defaultdict(list)
        for group, message in events:
            assert self.require_valid_group_name(group), "Group name not valid"
            by_host[self.consistent_hash(group)].append((group, message))
        expired = int(time.time()) - self.group_expiry
        for index, host_events in by_host.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for group, _ in host_events:
                # The same expiry of stale members as channels_redis's group_send, then their count.
                key = self._group_key(group)
                pipe.zremrangebyscore(key, min=0, max=expired)
                pipe.zcard(key)
            answers = await pipe.execute()
            for (group, message), members in zip(host_events, answers[1::2], strict=True):
                if members:
                    await self.group_send(group, message)
