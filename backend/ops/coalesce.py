"""Join deltas that follow each other within a few milliseconds into one frame (CHAT_DELTA_COALESCE_MS).

Every frame costs the server a write to the visitor's socket; when an upstream sends tokens faster than
anyone reads, sending them one by one only burns CPU. A piece that arrives when the last frame is older
than the window goes out at once, so slow streams (the usual 20–100 tokens a second) gain no delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class DeltaSender:
    def __init__(self, send: Callable[[str], Awaitable[None]], window: float) -> None:
        self.send = send
        self.window = window
        self.pending: list[str] = []
        self.last = float("-inf")
        self.timer: asyncio.Task | None = None

    async def add(self, text: str) -> None:
        if self.window <= 0:
            await self.send(text)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.timer is None and not self.pending and now - self.last >= self.window:
            self.last = now
            await self.send(text)
            return
        self.pending.append(text)
        if self.timer is None:
            self.timer = asyncio.create_task(self._flush_after(self.last + self.window - now))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        self.timer = None  # before sending: a close() meanwhile must not cancel a frame half-sent
        await self._flush()

    async def _flush(self) -> None:
        if self.pending:
            text = "".join(self.pending)
            self.pending.clear()
            self.last = asyncio.get_running_loop().time()
            await self.send(text)

    async def close(self) -> None:
        """Send what is pending now; nothing is sent after this returns."""
        if self.timer is not None:
            self.timer.cancel()
            await asyncio.gather(self.timer, return_exceptions=True)
            self.timer = None
        await self._flush()
