"""Redis clients for REDIS_URL: one synchronous client per process, and one asyncio client per event loop.

A command sent from a worker thread (the rate-limit counters of a new connection, the quota ledger's
scripts) goes through the synchronous client, so the thread makes one round trip of about 0.1 ms where a
hop back to the event loop would cost more; it keeps a pool of connections, so the threads share it
safely. What runs on the event loop before a provider call (the reply claim's script) goes through the
asyncio client of that loop, with no hop to a thread at all.
"""

from __future__ import annotations

import asyncio
import weakref

import redis
import redis.asyncio
from django.conf import settings

_clients: dict[str, redis.Redis] = {}
# Per event loop: its client and the scripts registered with it (asyncio connections serve one loop only).
_async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def async_redis_script(lua: str) -> redis.commands.core.AsyncScript:
    """The script registered with the running event loop's client for REDIS_URL (which must be set).

    Calling it runs EVALSHA and, when Redis lost its scripts (a restart), loads the script and runs it again.
    """
    loop = asyncio.get_running_loop()
    entry = _async.get(loop)
    if entry is None:
        timeout = settings.HEALTH_CHECK_TIMEOUT
        # Every reply start on the loop takes a connection: past REDIS_MAX_CONNECTIONS they wait for one
        # rather than fail (redis-py's own pool would refuse past 100).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        entry = _async[loop] = (redis.asyncio.Redis(connection_pool=pool), {})
    client, scripts = entry
    script = scripts.get(lua)
    if script is None:
        script = scripts[lua] = client.register_script(lua)
    return script
