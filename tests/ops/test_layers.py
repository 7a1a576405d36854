"""The Redis channel layer sends nothing to groups nobody is in, at one round trip for all of them, and lets
a listener whose cancellation was lost go at once."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.asyncio.connection import AbstractConnection

from backend.agents import events
from backend.ops.layers import GroupCheckingRedisChannelLayer

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs the Redis channel layer (REDIS_URL)"),
]


def layer(kind: type[RedisChannelLayer]) -> RedisChannelLayer:
    # A prefix of its own, so no other test's members are in these groups.
    return kind(hosts=[os.environ["REDIS_URL"]], prefix=f"test-layers-{uuid.uuid4().hex}", group_expiry=60)


@pytest.fixture
def round_trips(monkeypatch) -> list[int]:
    """Count the writes of commands to Redis: a pipeline is one."""
    sent: list[int] = []
    original = AbstractConnection.send_packed_command

    async def counting(self, command, check_health=True):
        sent.append(1)
        return await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def announcement(conversation_id: int) -> list[events.Event]:
    # The three groups of agent pages every stored message is announced to.
    return [
        (group, events.for_agent_pages(conversation_id, {"kind": "state", "state": "bot"}))
        for group in (events.ALL_SITES_GROUP, events.agents_site_group(1), events.agents_conversation_group(7))
    ]


async def test_an_announcement_nobody_listens_to_costs_one_round_trip_not_six(round_trips):
    plain, checking = layer(RedisChannelLayer), layer(GroupCheckingRedisChannelLayer)
    try:
        for each in (plain, checking):
            await each.connection(0).ping()  # opens the connection, whose handshake is not counted
        round_trips.clear()
        for group, event in announcement(7):
            await plain.group_send(group, event)
        plain_trips = len(round_trips)
        round_trips.clear()
        await checking.group_send_many(announcement(7))
        assert (plain_trips, len(round_trips)) == (6, 1)
    finally:
        await plain.flush()
        await checking.flush()


async def test_the_groups_with_members_still_get_the_event():
    checking = layer(GroupCheckingRedisChannelLayer)
    try:
        inbox, page = await checking.new_channel(), await checking.new_channel()
        await checking.group_add(events.agents_site_group(1), inbox)
        await checking.group_add(events.agents_conversation_group(7), page)
        await checking.group_send_many(announcement(7))
        for channel in (inbox, page):
            received = await checking.receive(channel)
            assert received["event"] == {"kind": "state", "state": "bot", "conversation": "7"}
    finally:
        await checking.flush()


async def test_a_member_past_the_group_expiry_is_dropped_as_channels_redis_drops_it():
    checking = layer(GroupCheckingRedisChannelLayer)
    try:
        stale = await checking.new_channel()
        await checking.group_add(events.ALL_SITES_GROUP, stale)
        connection = checking.connection(0)
        key = checking._group_key(events.ALL_SITES_GROUP)
        await connection.zadd(key, {stale: int(time.time()) - 120})  # joined two minutes ago, expiry is one
        await checking.group_send_many(announcement(7))
        assert await connection.zcard(key) == 0
    finally:
        await checking.flush()


async def test_announcements_go_through_the_checking_layer_when_redis_is_configured(round_trips):
    # Groups of a site and a conversation no other test uses, so nobody is in them.
    conversation_id = uuid.uuid4()
    event = events.for_agent_pages(conversation_id, {"kind": "state", "state": "bot"})
    quiet = [(events.agents_site_group(10**9), event), (events.agents_conversation_group(conversation_id), event)]
    layer = get_channel_layer()
    await layer.connection(0).ping()
    round_trips.clear()
    assert await events.send(quiet)
    assert len(round_trips) == 1


async def receive_after_losing_cancellation(checking: RedisChannelLayer, channel: str) -> dict:
    """Receive in a task whose cancellation was lost before, as Python 3.11's asyncio.wait_for loses one that
    arrives as what it waits for finishes: the task stays cancelled, but the code goes on."""

    async def listener() -> dict:
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass
        return await checking.receive(channel)

    async with asyncio.timeout(3):  # channels_redis alone: no answer before a message arrives
        return await asyncio.ensure_future(listener())


async def test_a_listener_whose_cancellation_was_lost_stops_instead_of_waiting_on(round_trips):
    """A visitor left and channels cancelled the listener, but the cancellation was lost below: it ends before
    waiting in Redis, where channels_redis alone went on waiting (and daphne killed the connection 10 s later)."""
    checking = layer(GroupCheckingRedisChannelLayer)
    try:
        channel = await checking.new_channel()
        round_trips.clear()
        with pytest.raises(asyncio.CancelledError):
            await receive_after_losing_cancellation(checking, channel)
        assert round_trips == []  # not one BZPOPMIN
        assert checking.receive_count == 0 and checking.receive_lock is None  # nothing left for the next loop
    finally:
        await checking.flush()


async def test_a_message_waiting_for_a_listener_that_stops_is_received_by_the_next():
    checking = layer(GroupCheckingRedisChannelLayer)
    try:
        channel = await checking.new_channel()
        await checking.send(channel, {"type": "agent.message", "text": "Still here"})
        with pytest.raises(asyncio.CancelledError):
            await receive_after_losing_cancellation(checking, channel)
        async with asyncio.timeout(3):
            assert (await checking.receive(channel))["text"] == "Still here"
    finally:
        await checking.flush()
