"""Reserve an upper bound before each provider call, settle it to the real usage after, never overshoot a cap.

The invariant: the tokens and cost billed to a site in a day or a month never exceed its caps. Checking
before the call and counting after it overshoots when calls arrive together, so each call first reserves
its worst case in one atomic step that checks the day's and the month's caps (a conditional UPDATE of the
period counters, or a Redis script: see ledger.py), and gives back the difference when it settles.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import uuid
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.utils import timezone

from backend.providers.base import ChatMessage, ChatRequest, Endpoint
from backend.providers.pricing import ZERO, cost_of, price_for
from backend.quotas import ledger
from backend.quotas.ledger import Hold, Refusal, Totals, period_starts  # noqa: F401 - callers import them from here
from backend.quotas.models import Reservation, SiteQuota, UsageCounter, UsageRecord, from_micros, to_micros
from backend.sites.models import Site

log = logging.getLogger(__name__)

# Tokens a chat template adds around each message and before the reply, rounded up generously.
MESSAGE_OVERHEAD_TOKENS = 8

# What reserve returns when the reply fits: a row with the database ledger, a Hold with the Redis one. Both
# have the id to settle or release it and the max_reply_tokens to send.
Held = Reservation | Hold


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


def reserve(
    site_id: int,
    prompt_tokens: int,
    max_reply_tokens: int,
    max_price: tuple[Decimal, Decimal],
    *,
    quota: SiteQuota | None = None,
    now: dt.datetime | None = None,
) -> Held | Refusal:
    """Hold the worst case of one reply against today's and this month's totals, or refuse the call.

    Pass the site's `quota` when you have it: the Redis ledger then reserves without a database query.
    """
    now = now or timezone.now()
    quota = quota or get_quota(site_id)
    return ledger.current().reserve(site_id, quota, prompt_tokens, max_reply_tokens, max_price, now)


def reserve_reply(
    site_id: int,
    endpoints: list[Endpoint],
    request: ChatRequest,
    prices: list[tuple[Decimal, Decimal] | None] | None = None,
    *,
    quota: SiteQuota | None = None,
    held: Hold | None = None,
) -> Held | Refusal:
    """Reserve for a chat request to any endpoint of the chain (the consumer's one call before streaming).

    `held` is a hold made for a guess of this request (reservation_attempt): it is the reservation when it
    covers the request's worst case, else it is given back and the request reserved as usual.
    """
    prompt = prompt_upper_bound(request.system, request.messages)
    price = highest_price(endpoints, prices)
    if held is not None:
        reply = request.max_tokens
        if (
            held.site_id == site_id
            and held.max_reply_tokens == reply
            and held.tokens >= prompt + reply
            and held.cost_micros >= ledger.hold_micros(prompt, reply, price)
        ):
            return held
        release(held)
    return reserve(site_id, prompt, request.max_tokens, price, quota=quota)


def reservation_attempt(
    site_id: int,
    endpoints: list[Endpoint],
    request: ChatRequest,
    prices: list[tuple[Decimal, Decimal] | None],
    *,
    quota: SiteQuota,
) -> ledger.Attempt | None:
    """The first reservation reserve_reply would try for this request, for another script to run in its round
    trip (the reply claim's, backend/ops/claims.py); None unless the ledger is Redis's."""
    if not reserves_in_scripts():
        return None
    prompt = prompt_upper_bound(request.system, request.messages)
    price = highest_price(endpoints, prices)
    return ledger.current().attempt(site_id, quota, prompt, request.max_tokens, price, timezone.now())


def reserves_in_scripts() -> bool:
    """Whether reservation_attempt gives attempts (the ledger is Redis's)."""
    return isinstance(ledger.current(), ledger.RedisLedger)


async def reserve_reply_async(
    site_id: int,
    endpoints: list[Endpoint],
    request: ChatRequest,
    prices: list[tuple[Decimal, Decimal] | None] | None = None,
    *,
    quota: SiteQuota | None = None,
) -> Held | Refusal:
    """Reserve from async code; when the caller is cancelled meanwhile (the visitor left), give the hold back."""
    pending = asyncio.ensure_future(
        database_sync_to_async(reserve_reply)(site_id, endpoints, request, prices, quota=quota)
    )
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        held = await pending
        if not isinstance(held, Refusal):
            await database_sync_to_async(release)(held)
        raise


def release(reservation: Held | uuid.UUID) -> bool:
    """Give back a reservation whose provider call never happened; False when it was not held."""
    return ledger.current().release(reservation)


def settle(
    reservation: Held | uuid.UUID,
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
    """Replace a reservation by the usage the provider billed, and write the call to the ledger.

    Pass the object reserve returned rather than its id: neither ledger then reads the reservation back.
    """
    now = now or timezone.now()
    if cost is None:
        cost = cost_of(kind, model, input_tokens, output_tokens)
    record = UsageRecord(
        conversation_id=conversation_id,
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
    books = ledger.current()
    settled = books.settle(reservation, record, to_micros(cost))
    if settled is None:
        return None
    held = settled.held
    if record.tokens > held.tokens or to_micros(cost) > held.cost_micros:
        log.warning(
            "usage above its reservation: site=%s tokens=%s reserved=%s", held.site_id, record.tokens, held.tokens
        )
    # Decided from the totals the settlement returned: no query unless a cap is newly 80% used.
    for totals, caps, warned in settled.periods:
        crossed = near_caps({totals.period: counter_summary(totals, caps)})
        if crossed and not warned and books.claim_warning(held.site_id, totals, now):
            warn_near_cap(held.site_id, totals, crossed)
    return record


def release_expired(site_id: int, now: dt.datetime | None = None) -> int:
    """Give back the holds of reservations whose process never settled them (it crashed or hung)."""
    return ledger.current().release_expired(site_id, now or timezone.now())


# -- reading usage ---------------------------------------------------------------------------------------
def percent(used: int | Decimal, cap: int | Decimal | None) -> float | None:
    if cap is None:
        return None
    if not cap:
        return 100.0
    return float(Decimal(used) * 100 / Decimal(cap))


def counter_summary(counter: UsageCounter | Totals, quota: SiteQuota) -> dict:
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
    """Return today's and this month's usage, caps and what remains, in the site's time zone.

    Expired holds are given back first, so what replies in progress hold is what they really hold. Writes
    no usage; the Redis ledger copies missing totals from the database.
    """
    now = now or timezone.now()
    quota = SiteQuota.objects.filter(site_id=site_id).first() or SiteQuota(site_id=site_id)
    books = ledger.current()
    books.release_expired(site_id, now)
    day, month = books.totals(site_id, quota, now)
    return {"day": counter_summary(day, quota), "month": counter_summary(month, quota)}


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


def warn_near_cap(site_id: int, totals: Totals, crossed: list[str]) -> None:
    """Log a warning (and mail the admins when email is set up): once per period, when a cap is 80% used."""
    site = Site.objects.only("name", "key").get(pk=site_id)
    text = f"Site {site.name!r} ({site.key}): " + "; ".join(crossed) + f" for the {totals.period} of {totals.start}."
    log.warning("usage near cap: %s", text)
    if settings.EMAIL_HOST and settings.ADMINS:
        mail_admins(f"Parley usage near its cap: {site.name}", text, fail_silently=True)
