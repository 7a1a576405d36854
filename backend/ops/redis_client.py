"""One synchronous Redis client per process, for the short commands run inside the pre-call database trip.

The channel layer's asyncio connections serve the event loop; a command sent from a worker thread (the
reply claim, the rate-limit counters, the quota ledger's scripts) goes through this client instead, so
the thread makes one round trip of about 0.1 ms where a hop back to the event loop would cost more.
The client keeps a pool of connections, so the worker threads share it safely.
"""

from __future__ import annotations

import redis
from django.conf import settings

_clients: dict[str, redis.Redis] = {}


def redis_client(url: str | None = None) -> redis.Redis | None:
    """Return the client for url (settings.REDIS_URL by default), or None when Redis is not configured."""
    url = settings.REDIS_URL if url is None else url
    if not url:
        return None
    if url not in _clients:
        timeout = settings.HEALTH_CHECK_TIMEOUT  # a Redis that went away fails fast with `unavailable`
        _clients[url] = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
    return _clients[url]
