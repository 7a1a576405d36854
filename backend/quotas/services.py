"""Reserve an upper bound before each provider call, settle it to the real usage after, never overshoot a cap.

The invariant: the tokens and cost billed to a site in a day or a month never exceed its caps. Checking
before the call and counting after it overshoots when calls arrive together, so each call first reserves
its worst case with one conditional UPDATE of the period counters (the database re-checks the condition
under its row lock, across processes), and gives back the difference when it settles.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import uuid
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from backend.providers.base import ChatMessage, ChatRequest, Endpoint
from backend.providers.pricing import ZERO, cost_of, price_for
from backend.quotas.models import Reservation, SiteQuota, UsageCounter, UsageRecord, from_micros, to_micros

log = logging.getLogger(__name__)

DAY, MONTH = UsageCounter.Period.DAY, UsageCounter.Period.MONTH
# A reservation that keeps losing the race re-reads the counters and tries again this many times.
RESERVE_ATTEMPTS = 20
# Tokens a chat template adds around each message and before the reply, rounded up generously.
MESSAGE_OVERHEAD_TOKENS = 8


@dataclass(frozen=True)
class Refusal:
    """No provider call: the reservation did not fit the site's caps."""

    message: str
    period: str
    metric: str  # "tokens" or "cost"


def get_quota(site_id: int) -> SiteQuota:
    """Return the site's quota settings, creating them with the defaults on first use."""
    quota = SiteQuota.objects.filter(site_id=site_id).first()
    if quota is None:
        try:
            with transaction.atomic():
                quota = SiteQuota.objects.create(site_id=site_id)
        except IntegrityError:  # another process created them first
            quota = SiteQuota.objects.get(site_id=site_id)
    return quota


def period_starts(zone_name: str, now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
    """Return the first day of the current calendar day and month in the given time zone."""
    import zoneinfo

    local = (now or timezone.now()).astimezone(zoneinfo.ZoneInfo(zone_name))
    return local.date(), local.date().replace(day=1)


def period_counters(
    site_id: int, quota: SiteQuota, now: dt.datetime | None = None
) -> tuple[UsageCounter, UsageCounter]:
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


def prompt_upper_bound(system: str, messages: list[ChatMessage]) -> int:
    """Return a bound the provider's prompt token count cannot exceed: a token is at least one byte."""
    texts = [system, *(m.content for m in messages)]
    return sum(len(t.encode()) for t in texts) + MESSAGE_OVERHEAD_TOKENS * (len(texts) + 1)


def highest_price(
    endpoints: list[Endpoint], known: list[tuple[Decimal, Decimal] | None] | None = None
) -> tuple[Decimal, Decimal]:
    """Return the highest input and output prices (USD per million tokens) of any endpoint in the chain.

    `known` gives each endpoint's prices when the caller read them already (None: not in the price table).
    """
    highest_in, highest_out = ZERO, ZERO
    for index, endpoint in enumerate(endpoints):
        prices = known[index] if known is not None else price_for(endpoint.kind, endpoint.model)
        if prices is None:
            log.warning("no price for %s/%s: cost caps cannot count its calls", endpoint.kind, endpoint.model)
            continue
        highest_in, highest_out = max(highest_in, prices[0]), max(highest_out, prices[1])
    return highest_in, highest_out


def reply_room(
    quota: SiteQuota, counters: tuple[UsageCounter, ...], prompt_tokens: int, max_reply_tokens: int, price
) -> tuple[int, str, str]:
    """Return the most reply tokens that fit every cap, and which (period, metric) limits it most."""
    price_in, price_out = price
    # A price per million tokens is a price in micro-dollars per token.
    prompt_micros = price_in * prompt_tokens
    room, limited_by = max_reply_tokens, ("", "")
    for counter in counters:
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


def reserve(
    site_id: int,
    prompt_tokens: int,
    max_reply_tokens: int,
    max_price: tuple[Decimal, Decimal],
    *,
    now: dt.datetime | None = None,
) -> Reservation | Refusal:
    """Hold the worst case of one reply against today's and this month's counters, or refuse the call."""
    now = now or timezone.now()
    quota = get_quota(site_id)
    release_expired(site_id, now)
    minimum = min(settings.QUOTA_MIN_REPLY_TOKENS, max_reply_tokens)
    price_in, price_out = max_price
    period, metric = DAY, "tokens"
    for _ in range(RESERVE_ATTEMPTS):
        day, month = period_counters(site_id, quota, now)
        reply, period, metric = reply_room(quota, (day, month), prompt_tokens, max_reply_tokens, max_price)
        if reply < minimum:
            break
        tokens = prompt_tokens + reply
        micros = int((price_in * prompt_tokens + price_out * reply).to_integral_value(rounding=ROUND_CEILING))
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
                return Reservation.objects.create(
                    site_id=site_id,
                    day=day,
                    month=month,
                    tokens=tokens,
                    cost_micros=micros,
                    max_reply_tokens=reply,
                    created=now,
                    expires=now + dt.timedelta(seconds=settings.QUOTA_RESERVATION_SECONDS),
                )
            # The other row did not fit: undo the half that did, re-read the counters and try again.
            transaction.set_rollback(True)
    log.info("quota refused a reply: site=%s period=%s metric=%s", site_id, period, metric)
    return Refusal(message=quota.quota_message, period=period, metric=metric)


def fits_condition(period: str, quota: SiteQuota, tokens: int, micros: int) -> Q:
    condition = Q(period=period)
    token_cap = quota.token_cap(period)
    if token_cap is not None:
        condition &= Q(tokens__lte=token_cap - tokens - F("reserved_tokens"))
    cost_cap = quota.cost_cap(period)
    if cost_cap is not None:
        condition &= Q(cost_micros__lte=to_micros(cost_cap) - micros - F("reserved_cost_micros"))
    return condition


def reserve_reply(
    site_id: int,
    endpoints: list[Endpoint],
    request: ChatRequest,
    prices: list[tuple[Decimal, Decimal] | None] | None = None,
) -> Reservation | Refusal:
    """Reserve for a chat request to any endpoint of the chain (the consumer's one call before streaming)."""
    prompt = prompt_upper_bound(request.system, request.messages)
    return reserve(site_id, prompt, request.max_tokens, highest_price(endpoints, prices))


async def reserve_reply_async(
    site_id: int,
    endpoints: list[Endpoint],
    request: ChatRequest,
    prices: list[tuple[Decimal, Decimal] | None] | None = None,
) -> Reservation | Refusal:
    """Reserve from async code; when the caller is cancelled meanwhile (the visitor left), give the hold back."""
    pending = asyncio.ensure_future(database_sync_to_async(reserve_reply)(site_id, endpoints, request, prices))
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        held = await pending
        if isinstance(held, Reservation):
            await database_sync_to_async(release)(held.id)
        raise


def release(reservation_id: uuid.UUID) -> bool:
    """Give back a reservation whose provider call never happened; False when it was not held."""
    reservation = Reservation.objects.get(pk=reservation_id)
    with transaction.atomic():
        if not Reservation.objects.filter(pk=reservation_id, state=Reservation.State.HELD).update(
            state=Reservation.State.RELEASED
        ):
            return False
        UsageCounter.objects.filter(pk__in=[reservation.day_id, reservation.month_id]).update(
            reserved_tokens=F("reserved_tokens") - reservation.tokens,
            reserved_cost_micros=F("reserved_cost_micros") - reservation.cost_micros,
        )
    return True


def settle(
    reservation_id: uuid.UUID,
    *,
    kind: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    status: str,
    cost: Decimal | None = None,
    conversation_id: uuid.UUID | None = None,
    latency_ms: int | None = None,
    first_token_ms: int | None = None,
    usage_estimated: bool = False,
    attempts: int = 1,
    now: dt.datetime | None = None,
) -> UsageRecord | None:
    """Replace a reservation by the usage the provider billed, and write the call to the ledger."""
    now = now or timezone.now()
    reservation = Reservation.objects.get(pk=reservation_id)
    if cost is None:
        cost = cost_of(kind, model, input_tokens, output_tokens)
    tokens, micros = input_tokens + output_tokens, to_micros(cost)
    counters = UsageCounter.objects.filter(pk__in=[reservation.day_id, reservation.month_id])
    # No savepoint: inside a caller's transaction (the consumer stores the reply in the same one), a failure
    # here rolls the whole of it back anyway.
    with transaction.atomic(savepoint=False):
        if Reservation.objects.filter(pk=reservation_id, state=Reservation.State.HELD).update(
            state=Reservation.State.SETTLED
        ):
            counters.update(
                tokens=F("tokens") + tokens,
                cost_micros=F("cost_micros") + micros,
                reserved_tokens=F("reserved_tokens") - reservation.tokens,
                reserved_cost_micros=F("reserved_cost_micros") - reservation.cost_micros,
            )
        elif Reservation.objects.filter(pk=reservation_id, state=Reservation.State.RELEASED).update(
            state=Reservation.State.SETTLED
        ):
            # Released after expiry: its hold is gone already, but what the provider billed still counts.
            log.warning("settled a reservation after it expired: site=%s", reservation.site_id)
            counters.update(tokens=F("tokens") + tokens, cost_micros=F("cost_micros") + micros)
        else:
            log.warning("reservation %s was already settled; usage not counted twice", reservation_id)
            return None
        record = UsageRecord.objects.create(
            site_id=reservation.site_id,
            conversation_id=conversation_id,
            day=reservation.day.start,
            provider=kind,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=usage_estimated,
            cost=cost,
            latency_ms=latency_ms,
            first_token_ms=first_token_ms,
            status=status,
            attempts=attempts,
            created=now,
        )
    if tokens > reservation.tokens or micros > reservation.cost_micros:
        log.warning(
            "usage above its reservation: site=%s tokens=%s reserved=%s",
            reservation.site_id,
            tokens,
            reservation.tokens,
        )
    warn_when_near_caps(reservation.site_id, [reservation.day_id, reservation.month_id], now)
    return record


def release_expired(site_id: int, now: dt.datetime | None = None) -> int:
    """Give back the holds of reservations whose process never settled them (it crashed or hung)."""
    now = now or timezone.now()
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


# -- reading usage ---------------------------------------------------------------------------------------
def percent(used: int | Decimal, cap: int | Decimal | None) -> float | None:
    if cap is None:
        return None
    if not cap:
        return 100.0
    return float(Decimal(used) * 100 / Decimal(cap))


def counter_summary(counter: UsageCounter, quota: SiteQuota) -> dict:
    token_cap, cost_cap = quota.token_cap(counter.period), quota.cost_cap(counter.period)
    cost = from_micros(counter.cost_micros)
    reserved_cost = from_micros(counter.reserved_cost_micros)
    return {
        "start": counter.start,
        "tokens": counter.tokens,
        "cost": cost,
        "reserved_tokens": counter.reserved_tokens,
        "reserved_cost": reserved_cost,
        "token_cap": token_cap,
        "cost_cap": cost_cap,
        "tokens_remaining": None if token_cap is None else max(0, token_cap - counter.tokens - counter.reserved_tokens),
        "cost_remaining": None if cost_cap is None else max(ZERO, cost_cap - cost - reserved_cost),
        "token_percent": percent(counter.tokens, token_cap),
        "cost_percent": percent(cost, cost_cap),
    }


def usage_summary(site_id: int, now: dt.datetime | None = None) -> dict[str, dict]:
    """Return today's and this month's usage, caps and what remains, in the site's time zone (writes nothing)."""
    quota = SiteQuota.objects.filter(site_id=site_id).first() or SiteQuota(site_id=site_id)
    day_start, month_start = period_starts(quota.timezone, now)
    summary = {}
    for period, start in (("day", day_start), ("month", month_start)):
        counter = UsageCounter.objects.filter(site_id=site_id, period=period, start=start).first()
        counter = counter or UsageCounter(site_id=site_id, period=period, start=start)
        summary[period] = counter_summary(counter, quota)
    return summary


def near_caps(summary: dict[str, dict]) -> list[str]:
    """Describe each cap that is at least QUOTA_WARN_PERCENT used, such as "daily cost cap: 85% used"."""
    threshold = settings.QUOTA_WARN_PERCENT
    found = []
    for period, label in (("day", "daily"), ("month", "monthly")):
        figures = summary.get(period)
        if not figures:
            continue
        for metric, key in (("token", "token_percent"), ("cost", "cost_percent")):
            used = figures[key]
            if used is not None and used >= threshold:
                found.append(f"{label} {metric} cap: {math.floor(used)}% used")
    return found


def warn_when_near_caps(site_id: int, counter_ids: list[int], now: dt.datetime) -> None:
    """Log a warning (and mail the admins when email is set up) once per period when a cap is 80% used."""
    quota = get_quota(site_id)
    for counter in UsageCounter.objects.filter(pk__in=counter_ids, warned_at__isnull=True):
        crossed = near_caps({counter.period: counter_summary(counter, quota)})
        # Only the first process to mark the counter sends the warning.
        if not crossed or not UsageCounter.objects.filter(pk=counter.pk, warned_at__isnull=True).update(warned_at=now):
            continue
        name = quota.site.name
        text = (
            f"Site {name!r} ({quota.site.key}): "
            + "; ".join(crossed)
            + f" for the {counter.period} of {counter.start}."
        )
        log.warning("usage near cap: %s", text)
        if settings.EMAIL_HOST and settings.ADMINS:
            mail_admins(f"Parley usage near its cap: {name}", text, fail_silently=True)
