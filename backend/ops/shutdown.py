"""End streaming replies cleanly when the server is told to stop (SIGTERM), before connections close.

daphne cancels application instances in a "before shutdown" trigger, but that trigger raises a KeyError
(and so waits for nothing) as soon as one finished connection is still in its table, which is the usual
case for a WebSocket: its upgrade request's entry stays. Twisted then closes every socket and stops the
loop, and a reply in flight would never be saved. This module registers its own trigger, which runs
first: it stops every reply in this process and lets each save its partial text as `stopped`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    async def finish_reply(self) -> None: ...


_live: weakref.WeakSet[Stoppable] = weakref.WeakSet()


def track(consumer: Stoppable) -> None:
    _live.add(consumer)


def untrack(consumer: Stoppable) -> None:
    _live.discard(consumer)


async def stop_all_replies() -> int:
    """Stop every reply streaming in this process and wait until each is saved; return how many."""
    consumers = list(_live)
    await asyncio.gather(*(consumer.finish_reply() for consumer in consumers), return_exceptions=True)
    return len(consumers)


def install_twisted_trigger() -> bool:
    """Hook stop_all_replies into the Twisted reactor's shutdown, when daphne runs this process."""
    if "daphne.server" not in sys.modules:
        return False  # not under daphne (uvicorn sends websocket.disconnect to each consumer instead)
    from twisted.internet import defer, reactor

    def before_shutdown() -> defer.Deferred:
        log.info("shutting down: stopping %d open chat connections", len(_live))
        return defer.Deferred.fromFuture(asyncio.ensure_future(stop_all_replies()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    return True
