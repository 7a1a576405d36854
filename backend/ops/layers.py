"""The Redis channel layer, asking first, in one round trip, which of an event's groups anyone is in.

Every stored message and state change is announced to three groups of agent pages (agents/events.py),
and most of the time nobody has those pages open. channels_redis's group_send spends two round trips to
Redis on a group even when it is empty: about a tenth of a reply's server CPU went on announcing it
(docs/benchmarks.md). Here one pipeline expires and counts the members of all the groups, and only the
groups with members are sent to, by channels_redis's own group_send. That repeats the expiry and reads
the members again, so a group someone is in costs one round trip more than before; the sending itself
stays channels_redis's code.
"""

from __future__ import annotations

import time
from collections import defaultdict

from channels_redis.core import RedisChannelLayer


class GroupCheckingRedisChannelLayer(RedisChannelLayer):
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
