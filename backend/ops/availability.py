"""Keep a consumer alive through database and channel-layer outages, and tell the visitor plainly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from backend.ops.health import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

UNAVAILABLE_MESSAGE = "The chat service is briefly unavailable. Your message was not lost: please send it again."
# Waits between attempts at the last write of a reply that has already streamed (about 6 s in all).
SAVE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 2.0)
# Waits between attempts to listen on the channel layer again after it failed.
LISTEN_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


async def retry_unavailable(call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Await call, retrying while a service is down; raise the last failure when it stays down."""
    for delay in (*SAVE_RETRY_DELAYS, None):
        try:
            return await call(*args, **kwargs)
        except UNAVAILABLE_ERRORS as failure:
            if delay is None:
                raise
            log.warning("service unavailable, retrying in %ss: %s", delay, type(failure).__name__)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class ResilientChannelLayerMixin:
    """Survive channel-layer outages: listen again with backoff instead of closing the WebSocket.

    Channels' consumer awaits `self.channel_receive()` in its main loop; an exception there would end
    the consumer and drop the visitor's connection. Messages sent to this consumer while the layer is
    down are lost; the visitor gets them from history on the next `hello`.
    """

    _raw_channel_receive: Callable[[], Awaitable[dict]] | None = None

    @property
    def channel_receive(self) -> Callable[[], Awaitable[dict]]:
        return self._listen

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict]]) -> None:
        self._raw_channel_receive = receive

    async def _listen(self) -> dict:
        failures = 0
        while True:
            try:
                return await self._raw_channel_receive()
            except UNAVAILABLE_ERRORS as failure:
                delay = LISTEN_RETRY_DELAYS[min(failures, len(LISTEN_RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("channel layer unavailable, listening again in %ss: %s", delay, type(failure).__name__)
                await asyncio.sleep(delay)
