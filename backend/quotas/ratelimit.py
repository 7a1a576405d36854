"""Rate limits per visitor and per client IP, with counters in Redis when REDIS_URL is set (else the local cache)."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from backend.ops.redis_client import redis_client

WINDOW_SECONDS = 60
MESSAGE_COUNT_TTL = WINDOW_SECONDS * 2  # a window's counter outlives it, then goes
# Connection counts expire this long after the last connection from the address, so a crashed process
# cannot hold an address's slots for ever.
CONNECTION_TTL_SECONDS = 3600

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    """Parse proxy addresses or CIDR ranges, raising ValueError naming a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return networks


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(address, networks: list[Network]) -> bool:
    return any(address in network for network in networks)


def client_ip(scope: dict, trusted: list[Network] | None = None) -> str:
    """Return the visitor's IP: the peer, or behind trusted proxies the right-most untrusted forwarded hop."""
    trusted = settings.TRUSTED_PROXY_NETWORKS if trusted is None else trusted
    peer = (scope.get("client") or ("unknown", 0))[0]
    peer_address = _address(peer)
    # No peer address means a Unix socket, which only a local proxy can reach: trust it when proxies are set.
    behind_socket = not scope.get("client") and bool(trusted)
    if not behind_socket and (peer_address is None or not _trusted(peer_address, trusted)):
        # Not from a proxy we trust: any X-Forwarded-For was written by the client itself, so ignore it.
        return peer
    forwarded = ",".join(
        value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"
    )
    client = peer
    # Each proxy appends the address it saw; walk back from the nearest until one is not ours.
    for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            break  # garbage a client wrote: the last trusted hop is the best we know
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client


@dataclass(frozen=True)
class MessageCount:
    """The counters a visitor's message adds one to (its visitor's and its address's, this window)."""

    keys: list[str]
    limits: list[int]
    wait: int  # seconds until the window ends

    def retry_after(self, counts: list[int]) -> int | None:
        """Given the counts after this message, the seconds to wait when over a limit, else None."""
        over = any(count > limit for count, limit in zip(counts, self.limits, strict=True))
        return self.wait if over else None


def message_count(
    site_key: str, visitor_id: int, ip: str, visitor_limit: int, ip_limit: int, now: float | None = None
) -> MessageCount:
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    keys = [f"quota:rl:{site_key}:visitor:{visitor_id}:{window}", f"quota:rl:{site_key}:ip:{ip}:{window}"]
    return MessageCount(keys, [visitor_limit, ip_limit], max(1, math.ceil((window + 1) * WINDOW_SECONDS - now)))


def hits(keys: list[str], timeout: int = MESSAGE_COUNT_TTL) -> list[int]:
    """Add one to each counter and give it this timeout from now; return the new counts.

    In Redis (one round trip for every counter: this runs before each new connection) through the
    process's one client, else in the Django cache. A visitor's message is counted by claims.claim,
    in the same round trip as the reply claim.
    """
    client = redis_client()
    if client is None:
        return [_cache_hit(key, timeout) for key in keys]
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.incr(key)
        pipeline.expire(key, timeout)
    return pipeline.execute()[0::2]


def _cache_hit(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout=timeout)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=timeout)
        return 1
    cache.touch(key, timeout)
    return count


def _unhit(key: str) -> None:
    """Take one off a counter; a count that expired meanwhile stays gone."""
    client = redis_client()
    if client is not None:
        if client.decr(key) < 0:
            client.delete(key)
        return
    try:
        if cache.decr(key) < 0:
            cache.delete(key)
    except ValueError:  # the count expired meanwhile
        pass


def _connections_key(site_key: str, ip: str) -> str:
    return f"quota:conn:{site_key}:{ip}"


def open_connection(site_key: str, ip: str, limit: int) -> bool:
    """Take one of the address's connection slots; False (and nothing taken) when all are in use."""
    key = _connections_key(site_key, ip)
    if hits([key], CONNECTION_TTL_SECONDS)[0] > limit:
        _unhit(key)
        return False
    return True


def close_connection(site_key: str, ip: str) -> None:
    _unhit(_connections_key(site_key, ip))


def open_connections(site_key: str, ip: str) -> int:
    key = _connections_key(site_key, ip)
    client = redis_client()
    return int((client.get(key) if client is not None else cache.get(key)) or 0)
