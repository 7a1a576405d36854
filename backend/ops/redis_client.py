"""One synchronous Redis client per process, for the short commands run inside the pre-call database trip.

The channel layer's asyncio connections serve the event loop; a command sent from a worker thread (the
reply claim, the rate-limit counters) goes through this client instead, so the thread makes one round
trip of about 0.1 ms where a hop back to the event loop would cost more than the command.
"""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def redis_client() -> redis.Redis | None:
    """Return the client for settings.REDIS_URL, or None when Redis is not configured."""
    if not settings.REDIS_URL:
        return None
    timeout = settings.HEALTH_CHECK_TIMEOUT  # a Redis that went away fails fast with `unavailable`
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
