"""Probe the services a Parley process needs: the database, the channel layer and the Celery broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from redis.exceptions import RedisError

# The errors that mean "a service is down", as opposed to a bug (an IntegrityError is not one of them):
# callers turn them into `unavailable`.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    RedisError,
    OSError,
    TimeoutError,
)


def ping_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def ping_channel_layer() -> None:
    """Round-trip to the channel layer's servers; raise when one does not answer in time."""
    layer = get_channel_layer()
    if layer is None:
        return
    async with asyncio.timeout(settings.HEALTH_CHECK_TIMEOUT):
        if hasattr(layer, "connection") and hasattr(layer, "hosts"):  # channels_redis: ping every shard
            for index in range(len(layer.hosts)):
                await layer.connection(index).ping()
        else:
            name = await layer.new_channel()
            await layer.send(name, {"type": "health.ping"})
            await layer.receive(name)


def ping_broker() -> None:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=settings.HEALTH_CHECK_TIMEOUT) as broker:
        broker.ensure_connection(max_retries=1, timeout=settings.HEALTH_CHECK_TIMEOUT)


async def _probe(ping: Callable[[], Awaitable[None]]) -> dict:
    started = time.monotonic()
    try:
        async with asyncio.timeout(settings.HEALTH_CHECK_TIMEOUT + 1):
            await ping()
    except Exception as error:  # noqa: BLE001 - any failure means "down"; only its class is reported
        # The class name only: messages can carry host names and credentials from URLs.
        return {"status": "down", "error": type(error).__name__}
    return {"status": "ok", "ms": round((time.monotonic() - started) * 1000, 1)}


async def report() -> tuple[bool, dict]:
    """Return (healthy, checks); a broker that is not configured is reported and not required."""
    probes = {
        "database": _probe(database_sync_to_async(ping_database)),
        "channel_layer": _probe(ping_channel_layer),
    }
    if getattr(settings, "CELERY_BROKER_URL", ""):
        probes["broker"] = _probe(sync_to_async(ping_broker, thread_sensitive=False))
    results = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
    if "broker" not in results:
        results["broker"] = {"status": "not_configured"}
    healthy = all(result["status"] in ("ok", "not_configured") for result in results.values())
    return healthy, results
