"""Where the period totals are kept: database rows (one process or a laptop) or Redis (a deployment).

Both ledgers hold the same figures per site and period (tokens and cost billed, tokens and cost held by
replies in progress), keep the invariant of services.py (billed usage never exceeds a cap), and write each
provider call to `UsageRecord`, the source of truth. `current()` picks one from QUOTA_LEDGER.

The Redis ledger costs no database query to reserve and one (the UsageRecord INSERT) to settle. When a
period's hash is missing (first use, expiry, or Redis lost its data), it is seeded from the sum of the
UsageRecord rows before anything is held; see docs/quotas.md for why a seed that races a settlement can
only over-count.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zoneinfo
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.ops.inserts import insert
from backend.ops.redis_client import redis_client as shared_redis_client
from backend.quotas.models import (
    MICROS,
    Reservation,
    SiteQuota,
    UsageCounter,
    UsageRecord,
    from_micros,
    to_micros,
)

log = logging.getLogger("backend.quotas.services")

DAY, MONTH = UsageCounter.Period.DAY, UsageCounter.Period.MONTH
# A reservation that keeps losing the race re-reads the totals and tries again this many times.
RESERVE_ATTEMPTS = 20


@dataclass(frozen=True)
class Refusal:
    """No provider call: the reservation did not fit the site's caps."""

    message: str
    period: str
    metric: str  # "tokens" or "cost"


@dataclass
class Totals:
    """A site's usage in one period: billed, and held by replies in progress (the fields of UsageCounter)."""

    period: str
    start: dt.date
    tokens: int = 0
    cost_micros: int = 0
    reserved_tokens: int = 0
    reserved_cost_micros: int = 0

    @property
    def cost(self) -> Decimal:
        return from_micros(self.cost_micros)


@dataclass(frozen=True)
class Hold:
    """A reservation kept in Redis: what the caller needs to call the provider, and to settle."""

    id: uuid.UUID
    site_id: int
    day: dt.date
    month: dt.date
    tokens: int
    cost_micros: int
    max_reply_tokens: int
    expires: dt.datetime

    @property
    def pk(self) -> uuid.UUID:
        return self.id


@dataclass
class Settlement:
    """What a ledger did when settling: the ledger row, and each period's new totals for the 80% warning."""

    record: UsageRecord
    held: Reservation | Hold
    # (totals after this call, caps of the period as a SiteQuota, warned already this period)
    periods: list[tuple[Totals, SiteQuota, bool]] = field(default_factory=list)


def period_starts(zone_name: str, now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
    """Return the first day of the current calendar day and month in the given time zone."""
    local = (now or timezone.now()).astimezone(zoneinfo.ZoneInfo(zone_name))
    return local.date(), local.date().replace(day=1)


def has_caps(quota: SiteQuota) -> bool:
    return any(
        cap is not None
        for cap in (quota.daily_token_cap, quota.monthly_token_cap, quota.daily_cost_cap, quota.monthly_cost_cap)
    )


def reply_room(quota: SiteQuota, totals, prompt_tokens: int, max_reply_tokens: int, price) -> tuple[int, str, str]:
    """Return the most reply tokens that fit every cap, and which (period, metric) limits it most."""
    price_in, price_out = price
    # A price per million tokens is a price in micro-dollars per token.
    prompt_micros = price_in * prompt_tokens
    room, limited_by = max_reply_tokens, ("", "")
    for counter in totals:
        token_cap = quota.token_cap(counter.period)
        if token_cap is not None:
            fits = token_cap - counter.tokens - counter.reserved_tokens - prompt_tokens
            if fits < room:
                room, limited_by = fits, (counter.period, "tokens")
        cost_cap = quota.cost_cap(counter.period)
        if cost_cap is not None:
            left = to_micros(cost_cap) - counter.cost_micros - counter.reserved_cost_micros - prompt_micros
            if price_out > 0:
                fits = int((left / price_out).to_integral_value(rounding=ROUND_FLOOR))
            else:
                fits = max_reply_tokens if left >= 0 else -1
            if fits < room:
                room, limited_by = fits, (counter.period, "cost")
    return room, *limited_by


def hold_micros(prompt_tokens: int, reply_tokens: int, price: tuple[Decimal, Decimal]) -> int:
    price_in, price_out = price
    return int((price_in * prompt_tokens + price_out * reply_tokens).to_integral_value(rounding=ROUND_CEILING))


def refuse(site_id: int, quota: SiteQuota, period: str, metric: str) -> Refusal:
    log.info("quota refused a reply: site=%s period=%s metric=%s", site_id, period, metric)
    return Refusal(message=quota.quota_message, period=period, metric=metric)


def current() -> DatabaseLedger | RedisLedger:
    """Return the ledger QUOTA_LEDGER names."""
    if settings.QUOTA_LEDGER == "redis":
        return RedisLedger(redis_client(settings.REDIS_URL), redis_prefix())
    return DatabaseLedger()


# -- the database ledger -----------------------------------------------------------------------------------
class DatabaseLedger:
    """Counters and reservations as rows: each hold is one conditional UPDATE, checked under the row locks."""

    def counters(self, site_id: int, quota: SiteQuota, now: dt.datetime) -> tuple[UsageCounter, UsageCounter]:
        """Return the site's (day, month) counters for the current periods, creating missing ones."""
        day_start, month_start = period_starts(quota.timezone, now)
        wanted = {(DAY, day_start), (MONTH, month_start)}
        found = {
            (c.period, c.start): c
            for c in UsageCounter.objects.filter(
                Q(period=DAY, start=day_start) | Q(period=MONTH, start=month_start), site_id=site_id
            )
        }
        for period, start in wanted - set(found):
            counter, _ = UsageCounter.objects.get_or_create(site_id=site_id, period=period, start=start)
            found[(period, start)] = counter
        return found[(DAY, day_start)], found[(MONTH, month_start)]

    def totals(self, site_id: int, quota: SiteQuota, now: dt.datetime) -> tuple[Totals, Totals]:
        """Return today's and this month's totals without writing a counter."""
        day_start, month_start = period_starts(quota.timezone, now)
        found = {
            c.period: c
            for c in UsageCounter.objects.filter(
                Q(period=DAY, start=day_start) | Q(period=MONTH, start=month_start), site_id=site_id
            )
        }

        def of(period: str, start: dt.date) -> Totals:
            row = found.get(period)
            if row is None:
                return Totals(period, start)
            return Totals(period, start, row.tokens, row.cost_micros, row.reserved_tokens, row.reserved_cost_micros)

        return of(DAY, day_start), of(MONTH, month_start)

    def reserve(
        self,
        site_id: int,
        quota: SiteQuota,
        prompt_tokens: int,
        max_reply_tokens: int,
        price: tuple[Decimal, Decimal],
        now: dt.datetime,
    ) -> Reservation | Refusal:
        minimum = min(settings.QUOTA_MIN_REPLY_TOKENS, max_reply_tokens)
        period, metric = DAY, "tokens"
        looked_for_expired = False
        for _ in range(RESERVE_ATTEMPTS):
            day, month = self.counters(site_id, quota, now)
            reply, period, metric = reply_room(quota, (day, month), prompt_tokens, max_reply_tokens, price)
            if reply < minimum:
                # Expired holds only matter when they block a reply: give them back then, and look again.
                if not looked_for_expired:
                    looked_for_expired = True
                    if self.release_expired(site_id, now):
                        continue
                break
            tokens, micros = prompt_tokens + reply, hold_micros(prompt_tokens, reply, price)
            with transaction.atomic():
                # One statement for both rows: each row checks its own caps, so the database's row locks make
                # the check and the increment one step, whatever other processes do meanwhile.
                updated = (
                    UsageCounter.objects.filter(pk__in=[day.pk, month.pk])
                    .filter(fits_condition(DAY, quota, tokens, micros) | fits_condition(MONTH, quota, tokens, micros))
                    .update(
                        reserved_tokens=F("reserved_tokens") + tokens,
                        reserved_cost_micros=F("reserved_cost_micros") + micros,
                    )
                )
                if updated == 2:
                    reservation = Reservation.objects.create(
                        site_id=site_id,
                        day=day,
                        month=month,
                        tokens=tokens,
                        cost_micros=micros,
                        max_reply_tokens=reply,
                        created=now,
                        expires=now + dt.timedelta(seconds=settings.QUOTA_RESERVATION_SECONDS),
                    )
                    # Settling this object needs neither the reservation nor the caps read again.
                    reservation.quota_settings = quota
                    return reservation
                # The other row did not fit: undo the half that did, re-read the counters and try again.
                transaction.set_rollback(True)
        return refuse(site_id, quota, period, metric)

    def release(self, held: Reservation | uuid.UUID) -> bool:
        reservation = held if isinstance(held, Reservation) else Reservation.objects.get(pk=held)
        with transaction.atomic():
            if not Reservation.objects.filter(pk=reservation.pk, state=Reservation.State.HELD).update(
                state=Reservation.State.RELEASED
            ):
                return False
            UsageCounter.objects.filter(pk__in=[reservation.day_id, reservation.month_id]).update(
                reserved_tokens=F("reserved_tokens") - reservation.tokens,
                reserved_cost_micros=F("reserved_cost_micros") - reservation.cost_micros,
            )
        return True

    def settle(self, held: Reservation | uuid.UUID, record: UsageRecord, micros: int) -> Settlement | None:
        if isinstance(held, Reservation):
            reservation = held
            quota = getattr(held, "quota_settings", None)
        else:
            reservation = Reservation.objects.select_related("day", "month").get(pk=held)
            quota = None
        tokens = record.input_tokens + record.output_tokens
        # No savepoint: inside a caller's transaction (the consumer stores the reply in the same one), a failure
        # here rolls the whole of it back anyway.
        with transaction.atomic(savepoint=False):
            if Reservation.objects.filter(pk=reservation.pk, state=Reservation.State.HELD).update(
                state=Reservation.State.SETTLED
            ):
                give_back = (reservation.tokens, reservation.cost_micros)
            elif Reservation.objects.filter(pk=reservation.pk, state=Reservation.State.RELEASED).update(
                state=Reservation.State.SETTLED
            ):
                # Released after expiry: its hold is gone already, but what the provider billed still counts.
                log.warning("settled a reservation after it expired: site=%s", reservation.site_id)
                give_back = (0, 0)
            else:
                log.warning("reservation %s was already settled; usage not counted twice", reservation.pk)
                return None
            rows = self.add_usage(reservation, tokens, micros, give_back)
            record.site_id, record.day, record.hold = reservation.site_id, reservation.day.start, reservation.pk
            insert(record)
        if quota is None:
            quota = SiteQuota.objects.filter(site_id=reservation.site_id).first() or SiteQuota()
        periods = []
        if has_caps(quota):
            starts = {
                reservation.day_id: (DAY, reservation.day.start),
                reservation.month_id: (MONTH, reservation.month.start),
            }
            for pk, used_tokens, used_micros, warned in rows:
                period, start = starts[pk]
                periods.append((Totals(period, start, used_tokens, used_micros), quota, warned))
        return Settlement(record, reservation, periods)

    def add_usage(
        self, reservation: Reservation, tokens: int, micros: int, give_back: tuple[int, int]
    ) -> list[tuple[int, int, int, bool]]:
        """Add the usage to both counters and give back the hold; return (id, tokens, cost, warned) of each.

        RETURNING hands back the new totals in the same statement, so the 80% warning costs no extra query.
        """
        table = connection.ops.quote_name(UsageCounter._meta.db_table)
        sql = (
            f"UPDATE {table} SET tokens = tokens + %s, cost_micros = cost_micros + %s, "  # noqa: S608 - our table
            "reserved_tokens = reserved_tokens - %s, reserved_cost_micros = reserved_cost_micros - %s "
            "WHERE id IN (%s, %s) RETURNING id, tokens, cost_micros, warned_at"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [tokens, micros, *give_back, reservation.day_id, reservation.month_id])
            return [(pk, used, cost, warned_at is not None) for pk, used, cost, warned_at in cursor.fetchall()]

    def claim_warning(self, site_id: int, totals: Totals, now: dt.datetime) -> bool:
        """Mark the period warned; only the first process to do so sends the warning."""
        return bool(
            UsageCounter.objects.filter(
                site_id=site_id, period=totals.period, start=totals.start, warned_at__isnull=True
            ).update(warned_at=now)
        )

    def release_expired(self, site_id: int, now: dt.datetime) -> int:
        released = 0
        expired = Reservation.objects.filter(site_id=site_id, state=Reservation.State.HELD, expires__lt=now)
        for reservation in expired.only("id", "day_id", "month_id", "tokens", "cost_micros")[:100]:
            with transaction.atomic():
                if Reservation.objects.filter(pk=reservation.pk, state=Reservation.State.HELD).update(
                    state=Reservation.State.RELEASED
                ):
                    UsageCounter.objects.filter(pk__in=[reservation.day_id, reservation.month_id]).update(
                        reserved_tokens=F("reserved_tokens") - reservation.tokens,
                        reserved_cost_micros=F("reserved_cost_micros") - reservation.cost_micros,
                    )
                    released += 1
        if released:
            log.warning("released %s expired reservations: site=%s", released, site_id)
        return released


def fits_condition(period: str, quota: SiteQuota, tokens: int, micros: int) -> Q:
    condition = Q(period=period)
    token_cap = quota.token_cap(period)
    if token_cap is not None:
        condition &= Q(tokens__lte=token_cap - tokens - F("reserved_tokens"))
    cost_cap = quota.cost_cap(period)
    if cost_cap is not None:
        condition &= Q(cost_micros__lte=to_micros(cost_cap) - micros - F("reserved_cost_micros"))
    return condition


# -- the Redis ledger --------------------------------------------------------------------------------------
# Keys (all under the prefix): "site:{id}:{period}:{start}", a hash of the period's totals (tokens, micros,
# rtokens, rmicros: used and held) and caps; "site:{id}:holds", the site's holds by expiry; "hold:{uuid}",
# one hold; "site:{id}:warned:{period}:{start}", set once the 80% warning went out.

# Each period hash is read with one HMGET and written with one HSET (a reply costs Redis about 17 commands,
# whatever its length). Figures are decimal strings; Lua holds them as doubles (exact below 2**53) and
# writes them back with "%d", never with tostring(), which prints large numbers in exponent notation.
FIGURES = """
local function figure(value) return tonumber(value) or 0 end
local function int(number) return string.format('%d', number) end
-- Take a hold's tokens and micros off a period hash's held figures (never below zero); skip a missing hash.
local function give_back(key, tokens, micros)
  local f = redis.call('HMGET', key, 'rtokens', 'rmicros', 'seeded')
  if not f[3] then return end
  redis.call('HSET', key, 'rtokens', int(math.max(0, figure(f[1]) - figure(tokens))),
    'rmicros', int(math.max(0, figure(f[2]) - figure(micros))))
end
local function release_expired(holds, hold_prefix, now)
  local released = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, 100)) do
    local hold = hold_prefix .. id
    local f = redis.call('HMGET', hold, 'state', 'day', 'month', 'tokens', 'micros')
    if f[1] == 'held' then
      give_back(f[2], f[4], f[5])
      give_back(f[3], f[4], f[5])
      redis.call('HSET', hold, 'state', 'released')
      released = released + 1
    end
    redis.call('ZREM', holds, id)
  end
  return released
end
"""

# KEYS: day hash, month hash, holds. ARGV: now, hold prefix, hold id, tokens, micros, expires, reply tokens,
# day token cap, day cost cap, month token cap, month cost cap (-1: none), hold ttl.
# Returns {released, "held"}, {released, "seed", missing periods (1: day, 2: month)} or
# {released, "full", day totals, month totals} (used tokens, used micros, held tokens, held micros).
# A function, so that the reply claim's script can run it in its own round trip (backend/ops/claims.py).
RESERVE_KEYS, RESERVE_ARGS = 3, 12
RESERVE_FUNCTION = """
local function reserve()
  local released = release_expired(KEYS[3], ARGV[2], ARGV[1])
  local caps = {{tonumber(ARGV[8]), tonumber(ARGV[9])}, {tonumber(ARGV[10]), tonumber(ARGV[11])}}
  local tokens, micros = tonumber(ARGV[4]), tonumber(ARGV[5])
  local totals, missing = {}, {}
  local fits = true
  for i = 1, 2 do
    local f = redis.call('HMGET', KEYS[i], 'seeded', 'tokens', 'micros', 'rtokens', 'rmicros')
    if f[1] ~= '1' then table.insert(missing, i) end
    local t = {figure(f[2]), figure(f[3]), figure(f[4]), figure(f[5])}
    totals[i] = t
    if caps[i][1] >= 0 and t[1] + t[3] + tokens > caps[i][1] then fits = false end
    if caps[i][2] >= 0 and t[2] + t[4] + micros > caps[i][2] then fits = false end
  end
  if #missing > 0 then return {released, 'seed', missing} end
  if not fits then
    return {released, 'full', {int(totals[1][1]), int(totals[1][2]), int(totals[1][3]), int(totals[1][4])},
      {int(totals[2][1]), int(totals[2][2]), int(totals[2][3]), int(totals[2][4])}}
  end
  for i = 1, 2 do
    redis.call('HSET', KEYS[i], 'rtokens', int(totals[i][3] + tokens), 'rmicros', int(totals[i][4] + micros),
      'tcap', ARGV[6 + 2 * i], 'ccap', ARGV[7 + 2 * i])
  end
  local hold = ARGV[2] .. ARGV[3]
  redis.call('HSET', hold, 'state', 'held', 'day', KEYS[1], 'month', KEYS[2], 'tokens', ARGV[4], 'micros', ARGV[5],
    'reply', ARGV[7], 'expires', ARGV[6])
  redis.call('EXPIRE', hold, ARGV[12])
  -- The set empties as holds settle, and Redis deletes an empty set: it needs no expiry of its own.
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
  return {released, 'held'}
end
"""
RESERVE = FIGURES + RESERVE_FUNCTION + "return reserve()"

# KEYS: the period hash. ARGV: tokens and micros billed in the period (from UsageRecord), ttl. Adds them once:
# a settlement that reached the hash before the seed is in both (an over-count, never an under-count).
SEED = """
if redis.call('HSETNX', KEYS[1], 'seeded', '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'micros', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# KEYS: hold, day hash, month hash, holds. ARGV: hold id, tokens, micros, held tokens, held micros, hold ttl,
# day ttl, month ttl. Returns {previous state, day tokens, day micros, day token cap, day cost cap, the same
# for the month}; the previous state "settled" means nothing was counted.
SETTLE = (
    FIGURES
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'unknown'
if state == 'settled' then return {state} end
local held_tokens, held_micros = 0, 0
if state == 'held' then
  held_tokens, held_micros = tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
local result = {state}
for i = 2, 3 do
  local f = redis.call('HMGET', KEYS[i], 'tokens', 'micros', 'rtokens', 'rmicros', 'tcap', 'ccap', 'seeded')
  local used_tokens, used_micros = figure(f[1]) + tonumber(ARGV[2]), figure(f[2]) + tonumber(ARGV[3])
  if f[7] then
    redis.call('HSET', KEYS[i], 'tokens', int(used_tokens), 'micros', int(used_micros),
      'rtokens', int(math.max(0, figure(f[3]) - held_tokens)), 'rmicros', int(math.max(0, figure(f[4]) - held_micros)))
  else
    -- A missing hash is created unseeded (the next reservation adds the database's sum to it).
    redis.call('HSET', KEYS[i], 'tokens', int(used_tokens), 'micros', int(used_micros))
    if not f[1] then redis.call('EXPIRE', KEYS[i], ARGV[5 + i]) end
  end
  for _, value in ipairs({int(used_tokens), int(used_micros), f[5] or '-1', f[6] or '-1'}) do
    table.insert(result, value)
  end
end
redis.call('HSET', KEYS[1], 'state', 'settled')
if state == 'unknown' then redis.call('EXPIRE', KEYS[1], ARGV[6]) end
return result
"""
)

# KEYS: hold, holds. ARGV: hold id. Gives back a hold whose provider call never happened.
RELEASE = (
    FIGURES
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'day', 'month', 'tokens', 'micros')
if f[1] ~= 'held' then return 0 end
give_back(f[2], f[4], f[5])
give_back(f[3], f[4], f[5])
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: holds. ARGV: now, hold prefix.
RELEASE_EXPIRED = FIGURES + "return release_expired(KEYS[1], ARGV[2], ARGV[1])"

# Set when a period's hash is created (it is created within its period): it outlives its period, and a
# reply that ends after the period did.
DAY_TTL = 3 * 86400
MONTH_TTL = 40 * 86400
HOLD_TTL_EXTRA = 86400  # how long after its expiry a hold can still be settled by id


@dataclass(frozen=True)
class Attempt:
    """One run of the RESERVE script: its keys and arguments, and the hold it makes when the reply fits."""

    keys: list[str]
    args: list
    hold: Hold

    def outcome(self, answer: list) -> str:
        """Read the script's answer: "held", "seed" or "full" (see RESERVE)."""
        released, outcome = int(answer[0]), answer[1].decode()
        if released:
            log.warning("released %s expired reservations: site=%s", released, self.hold.site_id)
        return outcome


@dataclass
class RedisScripts:
    reserve: redis.commands.core.Script
    seed: redis.commands.core.Script
    settle: redis.commands.core.Script
    release: redis.commands.core.Script
    release_expired: redis.commands.core.Script


_scripts: dict[str, RedisScripts] = {}


def redis_client(url: str) -> tuple[redis.Redis, RedisScripts]:
    """Return this process's client for url (backend/ops/redis_client.py) and the ledger's scripts on it."""
    if url not in _scripts:
        client = shared_redis_client(url)
        _scripts[url] = RedisScripts(
            *(client.register_script(lua) for lua in (RESERVE, SEED, SETTLE, RELEASE, RELEASE_EXPIRED))
        )
    return shared_redis_client(url), _scripts[url]


def redis_prefix() -> str:
    """Return the key prefix: one per database, so each database's ledger has its own totals."""
    # QUOTA_REDIS_PREFIX is not read from the environment: tests set it to keep each test's keys apart.
    return getattr(settings, "QUOTA_REDIS_PREFIX", "") or f"parley:quota:{connection.settings_dict['NAME']}:"


def cap_argument(cap) -> str:
    return "-1" if cap is None else str(cap)


def optional_cap(raw: bytes | str) -> int | None:
    value = int(raw)
    return None if value < 0 else value


class RedisLedger:
    """Totals in Redis hashes, changed by Lua scripts (atomic across processes); the ledger rows stay in SQL."""

    def __init__(self, client: tuple[redis.Redis, RedisScripts], prefix: str) -> None:
        self.redis, self.scripts = client
        self.prefix = prefix

    def period_key(self, site_id: int, period: str, start: dt.date) -> str:
        return f"{self.prefix}site:{site_id}:{period}:{start.isoformat()}"

    def holds_key(self, site_id: int) -> str:
        return f"{self.prefix}site:{site_id}:holds"

    def hold_key(self, hold_id: uuid.UUID | str) -> str:
        return f"{self.prefix}hold:{hold_id}"

    def warned_key(self, site_id: int, period: str, start: dt.date) -> str:
        return f"{self.prefix}site:{site_id}:warned:{period}:{start.isoformat()}"

    def hold_ttl(self) -> int:
        return settings.QUOTA_RESERVATION_SECONDS + HOLD_TTL_EXTRA

    def seed(self, site_id: int, day_start: dt.date, month_start: dt.date, which: list[int]) -> None:
        """Copy the billed totals of missing period hashes from UsageRecord (one query for both periods)."""
        next_month = (month_start + dt.timedelta(days=32)).replace(day=1)
        tokens = F("input_tokens") + F("output_tokens")
        in_day, in_month = Q(day=day_start), Q(day__gte=month_start, day__lt=next_month)
        sums = UsageRecord.objects.filter(site_id=site_id).aggregate(
            day_tokens=Coalesce(Sum(tokens, filter=in_day), 0),
            day_cost=Sum("cost", filter=in_day),
            month_tokens=Coalesce(Sum(tokens, filter=in_month), 0),
            month_cost=Sum("cost", filter=in_month),
        )
        for index in which:
            period, start, ttl = (DAY, day_start, DAY_TTL) if index == 1 else (MONTH, month_start, MONTH_TTL)
            # Each row is a whole number of micro-dollars; round away what a database's float sum may add.
            micros = int(((sums[f"{period}_cost"] or Decimal(0)) * MICROS).to_integral_value(rounding=ROUND_HALF_UP))
            self.scripts.seed(
                keys=[self.period_key(site_id, period, start)], args=[sums[f"{period}_tokens"], micros, ttl]
            )

    def attempt(
        self,
        site_id: int,
        quota: SiteQuota,
        prompt_tokens: int,
        reply: int,
        price: tuple[Decimal, Decimal],
        now: dt.datetime,
    ) -> Attempt:
        """One run of the RESERVE script, holding `reply` tokens after the prompt."""
        day_start, month_start = period_starts(quota.timezone, now)
        keys = [
            self.period_key(site_id, DAY, day_start),
            self.period_key(site_id, MONTH, month_start),
            self.holds_key(site_id),
        ]
        caps = [
            cap_argument(quota.daily_token_cap),
            cap_argument(None if quota.daily_cost_cap is None else to_micros(quota.daily_cost_cap)),
            cap_argument(quota.monthly_token_cap),
            cap_argument(None if quota.monthly_cost_cap is None else to_micros(quota.monthly_cost_cap)),
        ]
        expires = now + dt.timedelta(seconds=settings.QUOTA_RESERVATION_SECONDS)
        hold_id = uuid.uuid4()
        tokens, micros = prompt_tokens + reply, hold_micros(prompt_tokens, reply, price)
        args = [now.timestamp(), self.hold_key(""), str(hold_id), tokens, micros, expires.timestamp(), reply]
        hold = Hold(hold_id, site_id, day_start, month_start, tokens, micros, reply, expires)
        return Attempt(keys, [*args, *caps, self.hold_ttl()], hold)

    def reserve(
        self,
        site_id: int,
        quota: SiteQuota,
        prompt_tokens: int,
        max_reply_tokens: int,
        price: tuple[Decimal, Decimal],
        now: dt.datetime,
    ) -> Hold | Refusal:
        minimum = min(settings.QUOTA_MIN_REPLY_TOKENS, max_reply_tokens)
        reply, period, metric = max_reply_tokens, DAY, "tokens"
        for _ in range(RESERVE_ATTEMPTS):
            attempt = self.attempt(site_id, quota, prompt_tokens, reply, price, now)
            answer = self.scripts.reserve(keys=attempt.keys, args=attempt.args)
            outcome = attempt.outcome(answer)
            if outcome == "held":
                return attempt.hold
            if outcome == "seed":
                self.seed(site_id, attempt.hold.day, attempt.hold.month, [int(i) for i in answer[2]])
                continue
            # The full reply did not fit (or another process took the room meanwhile): lower it to what fits.
            day, month = (
                Totals(name, start, *(int(v) for v in figures))
                for name, start, figures in ((DAY, attempt.hold.day, answer[2]), (MONTH, attempt.hold.month, answer[3]))
            )
            reply, period, metric = reply_room(quota, (day, month), prompt_tokens, max_reply_tokens, price)
            if reply < minimum:
                break
        return refuse(site_id, quota, period, metric)

    def load(self, hold_id: uuid.UUID) -> Hold | None:
        """Return a hold from its id, while Redis keeps it (a day after it expired)."""
        f = {k.decode(): v.decode() for k, v in self.redis.hgetall(self.hold_key(hold_id)).items()}
        if not f:
            return None
        site_id, period, day = f["day"].removeprefix(f"{self.prefix}site:").split(":")
        month = f["month"].rsplit(":", 1)[1]
        expires = dt.datetime.fromtimestamp(float(f["expires"]), dt.UTC)
        return Hold(
            hold_id,
            int(site_id),
            dt.date.fromisoformat(day),
            dt.date.fromisoformat(month),
            int(f["tokens"]),
            int(f["micros"]),
            int(f["reply"]),
            expires,
        )

    def release(self, held: Hold | uuid.UUID) -> bool:
        hold = held if isinstance(held, Hold) else self.load(held)
        if hold is None:
            return False
        keys = [self.hold_key(hold.id), self.holds_key(hold.site_id)]
        return bool(self.scripts.release(keys=keys, args=[str(hold.id)]))

    def settle(self, held: Hold | uuid.UUID, record: UsageRecord, micros: int) -> Settlement | None:
        hold = held if isinstance(held, Hold) else self.load(held)
        if hold is None:
            log.error("reservation %s is unknown to the Redis ledger; usage not recorded", held)
            return None
        tokens = record.input_tokens + record.output_tokens
        day_key, month_key = (
            self.period_key(hold.site_id, DAY, hold.day),
            self.period_key(hold.site_id, MONTH, hold.month),
        )
        keys = [self.hold_key(hold.id), day_key, month_key, self.holds_key(hold.site_id)]
        # Redis first, then the row: a failure between them over-counts Redis (the safe side), and a retry
        # (the consumer retries while the database is away) finds the hold settled but no row, and writes it.
        answer = self.scripts.settle(
            keys=keys,
            args=[str(hold.id), tokens, micros, hold.tokens, hold.cost_micros, self.hold_ttl(), DAY_TTL, MONTH_TTL],
        )
        state = answer[0].decode()
        if state == "settled" and UsageRecord.objects.filter(hold=hold.id).exists():
            log.warning("reservation %s was already settled; usage not counted twice", hold.id)
            return None
        if state == "released":
            log.warning("settled a reservation after it expired: site=%s", hold.site_id)
        record.site_id, record.day, record.hold = hold.site_id, hold.day, hold.id
        insert(record)
        periods = []
        if state != "settled":
            for period, start, figures in ((DAY, hold.day, answer[1:5]), (MONTH, hold.month, answer[5:9])):
                used_tokens, used_micros, token_cap, cost_cap = figures
                caps = SiteQuota(site_id=hold.site_id)
                if period == DAY:
                    caps.daily_token_cap = optional_cap(token_cap)
                    caps.daily_cost_cap = from_cap_micros(cost_cap)
                else:
                    caps.monthly_token_cap = optional_cap(token_cap)
                    caps.monthly_cost_cap = from_cap_micros(cost_cap)
                if has_caps(caps):
                    # Whether the warning went out already is asked (SET NX) only when a cap is 80% used.
                    periods.append((Totals(period, start, int(used_tokens), int(used_micros)), caps, False))
        return Settlement(record, hold, periods)

    def claim_warning(self, site_id: int, totals: Totals, now: dt.datetime) -> bool:
        """Mark the period warned; only the first process to do so sends the warning."""
        ttl = DAY_TTL if totals.period == DAY else MONTH_TTL
        return bool(self.redis.set(self.warned_key(site_id, totals.period, totals.start), "1", nx=True, ex=ttl))

    def release_expired(self, site_id: int, now: dt.datetime) -> int:
        released = int(
            self.scripts.release_expired(keys=[self.holds_key(site_id)], args=[now.timestamp(), self.hold_key("")])
        )
        if released:
            log.warning("released %s expired reservations: site=%s", released, site_id)
        return released

    def totals(self, site_id: int, quota: SiteQuota, now: dt.datetime) -> tuple[Totals, Totals]:
        """Return today's and this month's totals, seeding missing periods from the database."""
        day_start, month_start = period_starts(quota.timezone, now)
        found = []
        for attempt in range(2):
            found, missing = [], []
            for index, (period, start) in enumerate(((DAY, day_start), (MONTH, month_start)), start=1):
                raw = self.redis.hmget(
                    self.period_key(site_id, period, start), "seeded", "tokens", "micros", "rtokens", "rmicros"
                )
                if raw[0] != b"1":
                    missing.append(index)
                found.append(Totals(period, start, *(int(v or 0) for v in raw[1:])))
            if not missing or attempt:
                break
            self.seed(site_id, day_start, month_start, missing)
        return found[0], found[1]


def from_cap_micros(raw: bytes | str) -> Decimal | None:
    value = optional_cap(raw)
    return None if value is None else Decimal(value) / Decimal(1_000_000)
