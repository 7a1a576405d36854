"""The first-byte and idle limits of a provider's stream: only the waits for its pieces are timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from backend.providers.base import Endpoint, ProviderError
from backend.providers.http import with_phase_timeouts


def upstream(first_byte: float = 30.0, idle: float = 30.0) -> Endpoint:
    return Endpoint("openai", "chat_completions", "http://127.0.0.1:9/v1", "m", "", 5.0, first_byte, idle)


async def pieces(gaps: list[float]) -> AsyncIterator[str]:
    """One piece after each gap, in seconds."""
    for number, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield f"p{number}"


async def test_the_readers_own_time_between_pieces_is_not_the_providers_silence():
    read = []
    async for piece in with_phase_timeouts(pieces([0, 0, 0, 0]), upstream(idle=0.1)):
        read.append(piece)
        await asyncio.sleep(0.25)  # the visitor's socket is slow, say: longer than the idle limit
    assert read == ["p0", "p1", "p2", "p3"]


async def test_a_silence_after_quick_pieces_is_cut_at_the_idle_limit():
    # The timer is armed when the wait for p1 starts; it fires 0.3 s into the silence, which has not lasted
    # the limit yet, and must then move to the silence's own end.
    read = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as failure:
        async for piece in with_phase_timeouts(pieces([0, 0.1, 0.1, 5]), upstream(idle=0.5)):
            read.append(piece)
    assert failure.value.message == "openai sent nothing for 0.5s (waiting for the next chunk)"
    assert (failure.value.code, failure.value.retryable) == ("timeout", True)
    assert read == ["p0", "p1", "p2"]
    assert time.monotonic() - started < 2, "cut near the limit, not when the piece finally came"


async def test_after_the_first_piece_the_idle_limit_applies_even_when_shorter_than_the_first_byte_one():
    read = []
    with pytest.raises(ProviderError) as failure:
        async for piece in with_phase_timeouts(pieces([0, 3]), upstream(first_byte=10, idle=0.1)):
            read.append(piece)
    assert failure.value.message == "openai sent nothing for 0.1s (waiting for the next chunk)"
    assert read == ["p0"]


async def test_a_slow_first_piece_is_cut_at_the_first_byte_budget_left():
    with pytest.raises(ProviderError) as failure:
        async for _ in with_phase_timeouts(pieces([5]), upstream(first_byte=0.5), first_timeout=0.1):
            pass
    assert failure.value.message == "openai sent nothing for 0.5s (waiting for the first byte)"


async def test_a_stop_while_waiting_is_a_cancellation_not_a_timeout():
    async def read() -> None:
        async for _ in with_phase_timeouts(pieces([0, 5]), upstream(idle=1)):
            pass

    reading = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert reading.cancelled()


async def test_nothing_is_left_scheduled_after_the_stream():
    loop = asyncio.get_running_loop()
    async for _ in with_phase_timeouts(pieces([0, 0]), upstream(idle=60)):
        pass
    await asyncio.sleep(0)
    assert not [timer for timer in loop._scheduled if not timer.cancelled() and timer.when() > loop.time() + 30]
