"""Consumers whose frames and channel-layer events go straight to their handlers."""

from __future__ import annotations

from channels.consumer import get_handler_name


class DirectDispatchMixin:
    """Run each socket event's or channel-layer message's handler as channels' own dispatch does, without
    its `aclose_old_connections()` before each one.

    That call is a hop to the shared sync thread for every frame and every event, ahead of the handler,
    and it cleans only that thread's database connections. A consumer that touches the database only
    through database_sync_to_async (which cleans the connections of the worker thread it runs in) gains
    nothing from it but the delay: about 0.14 ms a frame on the benchmark machine (docs/benchmarks.md).
    """

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
