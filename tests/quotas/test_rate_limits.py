"""Rate limits per visitor and per client IP, open connections per IP, and where the client IP comes from."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from channels.db import database_sync_to_async

from backend.chat.models import Message
from backend.quotas.ratelimit import client_ip, open_connections, parse_networks
from tests.conftest import receive_until_end
from tests.quotas.conftest import chat_from, hello, set_quota

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
# 15 seconds into a minute: the window ends 45 seconds later.
FROZEN = dt.datetime(2026, 3, 10, 9, 30, 15, tzinfo=dt.UTC)


async def send(ws, client_id: str, text: str = "hi") -> dict:
    """Send a message; return the rate_limited error, or the reply's end frame."""
    await ws.send_json_to({"type": "message", "id": client_id, "text": text})
    first = await ws.receive_json_from()
    if first["type"] == "error":
        return first
    return (await receive_until_end(ws))[-1]


async def test_a_visitor_over_their_limit_is_told_when_to_retry_and_nothing_is_stored(acme, fake_openai):
    await db(set_quota)(acme, visitor_messages_per_minute=2)
    with time_machine.travel(FROZEN, tick=False) as clock:
        async with chat_from(acme.key) as ws:
            await hello(ws)
            assert (await send(ws, "c1"))["type"] == "end"
            assert (await send(ws, "c2"))["type"] == "end"
            limited = await send(ws, "c3", "third")
            assert limited == {
                "type": "error",
                "code": "rate_limited",
                "retry_after": 45,
                "message": "You are sending messages too quickly. Please wait 45 seconds.",
                "reply_to": "c3",
            }
            clock.shift(44)
            assert (await send(ws, "c3", "third"))["retry_after"] == 1
            clock.shift(1)
            assert (await send(ws, "c3", "third"))["type"] == "end"
    assert len(fake_openai.requests) == 3
    assert await db(Message.objects.filter(client_id="c3").count)() == 1


async def test_the_limit_follows_the_visitor_across_connections(acme, fake_openai):
    await db(set_quota)(acme, visitor_messages_per_minute=1)
    with time_machine.travel(FROZEN, tick=False):
        async with chat_from(acme.key, ip="192.0.2.1") as ws:
            ready = await hello(ws)
            assert (await send(ws, "c1"))["type"] == "end"
        async with chat_from(acme.key, ip="192.0.2.2") as ws:
            await hello(ws, ready["visitor"])
            assert (await send(ws, "c2"))["code"] == "rate_limited"
        async with chat_from(acme.key, ip="192.0.2.2") as ws:
            await hello(ws)  # someone else
            assert (await send(ws, "c1"))["type"] == "end"


async def test_visitors_sharing_an_address_share_its_limit(acme, fake_openai):
    await db(set_quota)(acme, ip_messages_per_minute=3)
    with time_machine.travel(FROZEN, tick=False):
        async with chat_from(acme.key, ip="192.0.2.9") as one, chat_from(acme.key, ip="192.0.2.9") as two:
            await hello(one)
            await hello(two)
            assert (await send(one, "a1"))["type"] == "end"
            assert (await send(two, "b1"))["type"] == "end"
            assert (await send(one, "a2"))["type"] == "end"
            limited = await send(two, "b2")
            assert (limited["code"], limited["retry_after"]) == ("rate_limited", 45)
        async with chat_from(acme.key, ip="192.0.2.10") as other:
            await hello(other)
            assert (await send(other, "c1"))["type"] == "end"
    assert len(fake_openai.requests) == 4


async def test_each_site_counts_separately(acme, globex, fake_openai):
    from tests.conftest import GLOBEX_ORIGIN

    await db(set_quota)(acme, visitor_messages_per_minute=1, ip_messages_per_minute=1)
    with time_machine.travel(FROZEN, tick=False):
        async with chat_from(acme.key, ip="192.0.2.5") as ws:
            await hello(ws)
            assert (await send(ws, "c1"))["type"] == "end"
            assert (await send(ws, "c2"))["code"] == "rate_limited"
        async with chat_from(globex.key, ip="192.0.2.5", origin=GLOBEX_ORIGIN) as ws:
            await hello(ws)
            assert (await send(ws, "c1"))["type"] == "end"


async def test_too_many_open_connections_from_one_address_are_refused(acme):
    await db(set_quota)(acme, ip_connections=2)
    async with chat_from(acme.key, ip="192.0.2.20") as first, chat_from(acme.key, ip="192.0.2.20") as second:
        assert (await first.connect())[0] and (await second.connect())[0]
        async with chat_from(acme.key, ip="192.0.2.20") as third:
            assert (await third.connect())[0] is False
        async with chat_from(acme.key, ip="192.0.2.21") as elsewhere:
            assert (await elsewhere.connect())[0]
        await first.disconnect()
        async with chat_from(acme.key, ip="192.0.2.20") as again:
            assert (await again.connect())[0]
    assert await db(open_connections)(acme.key, "192.0.2.20") == 0


async def test_behind_a_trusted_proxy_each_forwarded_client_counts_on_its_own(acme, fake_openai, settings):
    settings.TRUSTED_PROXY_NETWORKS = parse_networks(["10.0.0.0/8"])
    await db(set_quota)(acme, ip_messages_per_minute=1, ip_connections=1)

    def forwarded(ip: str) -> list:
        return [(b"x-forwarded-for", ip.encode())]

    with time_machine.travel(FROZEN, tick=False):
        async with chat_from(acme.key, ip="10.0.0.2", headers=forwarded("198.51.100.1")) as one:
            async with chat_from(acme.key, ip="10.0.0.2", headers=forwarded("198.51.100.2")) as two:
                await hello(one)
                await hello(two)
                assert (await send(one, "a1"))["type"] == "end"
                assert (await send(two, "b1"))["type"] == "end"
                assert (await send(one, "a2"))["code"] == "rate_limited"


async def test_a_forwarded_header_from_an_untrusted_peer_changes_nothing(acme, fake_openai, settings):
    settings.TRUSTED_PROXY_NETWORKS = parse_networks(["10.0.0.0/8"])
    await db(set_quota)(acme, ip_messages_per_minute=1)
    with time_machine.travel(FROZEN, tick=False):
        async with chat_from(acme.key, ip="198.51.100.50", headers=[(b"x-forwarded-for", b"1.1.1.1")]) as one:
            await hello(one)
            assert (await send(one, "a1"))["type"] == "end"
        async with chat_from(acme.key, ip="198.51.100.50", headers=[(b"x-forwarded-for", b"2.2.2.2")]) as two:
            await hello(two)
            assert (await send(two, "b1"))["code"] == "rate_limited"


# -- the client IP -----------------------------------------------------------------------------------------
PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8", "192.0.2.1"])


def scope(peer: str, *forwarded: str) -> dict:
    return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


@pytest.mark.parametrize(
    ("request_scope", "expected"),
    [
        (scope("198.51.100.7"), "198.51.100.7"),
        (scope("198.51.100.7", "1.2.3.4"), "198.51.100.7"),  # a client's own header is ignored
        (scope("10.1.2.3", "203.0.113.9"), "203.0.113.9"),
        (scope("10.1.2.3", "6.6.6.6, 203.0.113.9"), "203.0.113.9"),  # the left-most hop is the client's word
        (scope("10.1.2.3", "6.6.6.6, 203.0.113.9, 10.9.9.9"), "203.0.113.9"),  # through two of our proxies
        (scope("192.0.2.1", "203.0.113.9", "10.0.0.5"), "203.0.113.9"),  # one header per proxy
        (scope("10.1.2.3", "not-an-ip, 10.0.0.4"), "10.0.0.4"),
        (scope("10.1.2.3"), "10.1.2.3"),
        (scope("fd00::1", "2001:db8::5"), "2001:db8::5"),
        ({"client": None, "headers": [(b"x-forwarded-for", b"203.0.113.9")]}, "203.0.113.9"),  # Unix socket
    ],
)
def test_the_client_ip_is_the_right_most_address_no_trusted_proxy_wrote(request_scope, expected):
    assert client_ip(request_scope, PROXIES) == expected


def test_without_trusted_proxies_a_missing_peer_is_unknown_whatever_the_header():
    forged = {"client": None, "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert client_ip(forged, []) == "unknown"


def test_a_bad_trusted_proxy_entry_is_named():
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_networks(["10.0.0.1", "10.0.0.300"])


def test_a_bad_trusted_proxies_setting_stops_the_server_with_a_clear_message(tmp_path):
    from tests.processes import manage, server_env

    env = server_env(f"sqlite:///{tmp_path / 'x.sqlite3'}", TRUSTED_PROXIES="10.0.0.0/8,proxy.internal")
    with pytest.raises(RuntimeError, match="TRUSTED_PROXIES must list IP addresses or CIDR ranges"):
        manage(env, "check")
