"""Who is answering a visitor message right now, agreed between processes through Redis.

A visitor who loses the connection mid-reply reconnects, perhaps to another process, and resends the
message. Until the first process has saved its (stopped) reply, the resend would find no reply and ask
the provider again. A claim per message, taken before a reply starts and dropped once it is saved,
makes the resend wait for the stored reply instead. With the in-memory channel layer there is only one
process, so the claims live in it.

Releasing a claim leaves a mark on the message for as long as a claim lasts, and a claim that finds the
mark says the message may have been answered lately: the caller then reads the history before calling
anyone, rather than calling on the history it read last and confirming it beside the call
(consumers.HistoryCheck), which would send the provider a request only to withdraw it.

A claim holds its connection's token. The same connection may take it again: when Redis's answer to a
claim is lost (a timeout), the visitor is told `unavailable` and sends the message again, which would
otherwise wait for a claim nobody answers for until it expires. Releasing deletes only the caller's claim,
so a reply that outlived its claim cannot drop the claim another connection took since.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass

from channels.layers import get_channel_layer
from django.conf import settings
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from backend.ops.redis_client import async_redis_script
from backend.quotas import ledger, ratelimit

# A reply that streams longer than this loses its claim; a crashed process's claims expire after it.
CLAIM_SECONDS = 180

_local: dict[str, str] = {}  # key -> token of the local claims
_released: dict[str, float] = {}  # release marks of the local claims: key -> when the mark goes, in order
_local_lock = threading.Lock()  # the tests' event loops run in several threads


def _key(conversation_id: object, client_id: str) -> str:
    prefix = getattr(get_channel_layer(), "prefix", "parley")
    return f"{prefix}:reply:{conversation_id}:{client_id}"


def _released_key(claim_key: str) -> str:
    return f"{claim_key}:released"


def _on_redis() -> bool:
    """Whether the channel layer is Redis's: then the processes agree through it, else there is one."""
    return hasattr(get_channel_layer(), "consistent_hash")


# The claim of KEYS[k], with its release mark KEYS[k + 1] and counters KEYS[k + 2 ..] to add one to; ARGV[a]:
# the claim's seconds, ARGV[a + 1]: the counters', ARGV[a + 2]: the claiming connection's token. False when
# another token holds the claim (nothing counted), else {1 when the mark is there, else 0, then the counters'
# new values}.
CLAIM_FUNCTION = """
local function claim(k, a)
  local holder = redis.call('GET', KEYS[k])
  if holder and holder ~= ARGV[a + 2] then return false end
  redis.call('SET', KEYS[k], ARGV[a + 2], 'EX', ARGV[a])
  local answer = {redis.call('EXISTS', KEYS[k + 1])}
  for i = k + 2, #KEYS do
    answer[#answer + 1] = redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ARGV[a + 1])
  end
  return answer
end
"""
CLAIM_AND_COUNT = CLAIM_FUNCTION + "return claim(1, 1)"
# The quota ledger's reservation first in KEYS and ARGV, then the site's configuration stamp (the key, the
# stamp the connection holds), then the claim's: false when the claim is held elsewhere (nothing counted or
# reserved), else {the claim's answer, the reservation's (ledger.RESERVE)}. The claim's answer says "stale"
# too when the stamps differ: the hold was checked against caps and prices that may have changed.
CLAIM_AND_RESERVE = (
    ledger.FIGURES
    + ledger.RESERVE_FUNCTION
    + CLAIM_FUNCTION
    + f"""
local claimed = claim({ledger.RESERVE_KEYS + 2}, {ledger.RESERVE_ARGS + 2})
if not claimed then return false end
if redis.call('GET', KEYS[{ledger.RESERVE_KEYS + 1}]) ~= ARGV[{ledger.RESERVE_ARGS + 1}] then claimed[1] = 1 end
return {{claimed, reserve()}}
"""
)


# KEYS: the claim, its release mark. ARGV: the releasing connection's token, the mark's seconds. The mark is
# left whoever holds the claim: a reply saved after its claim expired may be missed by the next claimant's read.
RELEASE = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


@dataclass(frozen=True)
class Claimed:
    counts: list[int]  # the rate-limit counters' new values (ratelimit.MessageCount.retry_after)
    # A claim on the message was released lately (it may be answered already), or the site's configuration
    # changed since the connection read it: either way, read before calling.
    stale: bool
    hold: ledger.Hold | None = None  # the reservation made with the claim, when it fitted


async def claim(
    conversation_id: object,
    client_id: str,
    token: str,
    count: list[str],
    reserve: ledger.Attempt | None = None,
    stamp: tuple[str, str] = ("", ""),
) -> Claimed | None:
    """Claim the message for the connection of `token`, or None (nothing counted) when another connection holds
    the claim.

    With `reserve` (quota services.reservation_attempt) the same script also runs that reservation once the
    claim is taken: the quota costs no round trip of its own before the provider call; `stamp` is then the
    Redis key of the site's configuration stamp and the stamp the reservation was made under
    (chat.config.stamp_key). Raises Redis's error when it is down: replies wait until it is back.
    """
    key = _key(conversation_id, client_id)
    if not _on_redis():
        # One process: the counters are in the process's cache, which takes no round trip.
        with _local_lock:
            if _local.setdefault(key, token) != token:
                return None
            stale = _released.get(key, 0) > time.monotonic()
        return Claimed(ratelimit.hits(count), stale)
    keys = [key, _released_key(key), *count]
    args = [CLAIM_SECONDS, ratelimit.MESSAGE_COUNT_TTL, token]
    if reserve is not None:
        keys, args = [*reserve.keys, stamp[0], *keys], [*reserve.args, stamp[1], *args]
    script = async_redis_script(CLAIM_AND_COUNT if reserve is None else CLAIM_AND_RESERVE)
    async with asyncio.timeout(settings.HEALTH_CHECK_TIMEOUT):
        answer = await _run_once(script, keys, args)
    if answer is None:
        return None
    hold = None
    if reserve is not None:
        answer, reserved = answer
        # "seed" or "full": nothing is held, and reserving as usual after the read sorts it out.
        hold = reserve.hold if reserve.outcome(reserved) == "held" else None
    return Claimed([int(value) for value in answer[1:]], stale=bool(answer[0]), hold=hold)


async def _run_once(script: AsyncScript, keys: list, args: list) -> object:
    """Run the script, retrying the sending as redis-py retries its commands (a connection Redis dropped is
    opened again) but never after it was sent: run twice, a claim would count the visitor's message twice."""
    pool = script.registered_client.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.retry.call_with_retry(
            lambda: connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args),
            lambda _: connection.disconnect(),
        )
        try:
            return await connection.read_response()
        except NoScriptError:
            # Redis lost its scripts (a restart), so this one did not run: run it again, loading it first.
            return await script(keys=keys, args=args)
    except BaseException:
        await connection.disconnect()  # an answer may still be on its way: nobody else may read it
        raise
    finally:
        await pool.release(connection)


async def release(conversation_id: object, client_id: str, token: str) -> None:
    """Drop the claim if the connection of `token` holds it, and leave the release mark."""
    key = _key(conversation_id, client_id)
    if not _on_redis():
        now = time.monotonic()
        with _local_lock:
            if _local.get(key) == token:
                del _local[key]
            _released.pop(key, None)
            _released[key] = now + CLAIM_SECONDS
            # Marks are kept in the order they go: drop the ones gone from the front.
            for old in list(itertools.takewhile(lambda k: _released[k] <= now, _released)):
                del _released[old]
        return
    async with asyncio.timeout(settings.HEALTH_CHECK_TIMEOUT):
        await async_redis_script(RELEASE)(keys=[key, _released_key(key)], args=[token, CLAIM_SECONDS])
