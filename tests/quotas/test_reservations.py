"""Reserve and settle as plain functions: what fits, what is lowered, what is refused, and what is billed."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from backend.providers.base import ChatMessage, Endpoint
from backend.quotas import services
from backend.quotas.models import UsageRecord
from backend.quotas.services import Refusal, highest_price, prompt_upper_bound, release_expired, reserve, settle
from tests.quotas.conftest import set_quota
from tests.quotas.conftest import totals as counters

pytestmark = pytest.mark.django_db

NO_PRICE = (Decimal(0), Decimal(0))
MINI = (Decimal("0.15"), Decimal("0.60"))  # gpt-4o-mini, USD per million tokens
GPT41 = (Decimal("2"), Decimal("8"))


# Expiry tests move 15 minutes or an hour on: from midday, so that no day ends in between.
MIDDAY = time_machine.travel(dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC), tick=False)


def test_a_reservation_holds_the_prompt_and_the_whole_reply_against_day_and_month(acme):
    held = reserve(acme.pk, 100, 500, MINI)
    assert not isinstance(held, Refusal)
    assert (held.tokens, held.max_reply_tokens) == (600, 500)
    # 100 × 0.15 + 500 × 0.60 micro-dollars = 315.
    assert held.cost_micros == 315
    both = counters(acme)
    assert {(p, c.reserved_tokens, c.reserved_cost_micros, c.tokens) for p, c in both.items()} == {
        ("day", 600, 315, 0),
        ("month", 600, 315, 0),
    }


def test_the_reply_is_lowered_to_what_remains_of_the_token_cap(acme):
    set_quota(acme, daily_token_cap=1000, monthly_token_cap=5000)
    first = reserve(acme.pk, 100, 500, NO_PRICE)
    second = reserve(acme.pk, 100, 500, NO_PRICE)
    assert first.max_reply_tokens == 500
    assert second.max_reply_tokens == 300  # 1000 - 600 held - 100 prompt
    third = reserve(acme.pk, 100, 500, NO_PRICE)
    assert isinstance(third, Refusal)
    assert (third.period, third.metric) == ("day", "tokens")
    assert "leave your email" in third.message.lower()
    assert counters(acme)["day"].reserved_tokens == 1000


def test_the_reply_is_lowered_to_what_remains_of_the_cost_cap(acme):
    # 0.001 USD = 1000 micro-dollars; the prompt costs 100 × 2 = 200, each reply token 8.
    set_quota(acme, monthly_cost_cap=Decimal("0.001"))
    held = reserve(acme.pk, 100, 500, GPT41)
    assert held.max_reply_tokens == 100  # (1000 - 200) / 8
    assert held.cost_micros == 1000
    refused = reserve(acme.pk, 1, 500, GPT41)
    assert isinstance(refused, Refusal) and (refused.period, refused.metric) == ("month", "cost")


def test_a_reply_that_would_be_lowered_below_a_useful_minimum_is_refused(acme, settings):
    settings.QUOTA_MIN_REPLY_TOKENS = 32
    set_quota(acme, daily_token_cap=130)
    assert isinstance(reserve(acme.pk, 100, 500, NO_PRICE), Refusal)  # only 30 reply tokens would fit
    assert reserve(acme.pk, 98, 500, NO_PRICE).max_reply_tokens == 32
    assert counters(acme)["day"].reserved_tokens == 130


def test_a_cost_cap_of_zero_refuses_paid_models_but_not_free_local_ones(acme):
    set_quota(acme, daily_cost_cap=Decimal(0))
    assert isinstance(reserve(acme.pk, 10, 100, MINI), Refusal)
    assert not isinstance(reserve(acme.pk, 10, 100, NO_PRICE), Refusal)


def test_a_token_cap_of_zero_refuses_every_call(acme):
    set_quota(acme, monthly_token_cap=0)
    assert isinstance(reserve(acme.pk, 10, 100, NO_PRICE), Refusal)
    assert counters(acme)["month"].reserved_tokens == 0


def test_settling_replaces_the_hold_by_the_billed_usage_and_writes_the_ledger(acme):
    set_quota(acme, daily_token_cap=10_000)
    held = reserve(acme.pk, 100, 500, MINI)
    record = settle(
        held.id,
        kind="openai",
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=500,
        status="complete",
        latency_ms=1200,
        first_token_ms=300,
    )
    assert record.cost == Decimal("0.000450") and isinstance(record.cost, Decimal)
    assert (record.provider, record.model, record.input_tokens, record.output_tokens) == (
        "openai",
        "gpt-4o-mini",
        1000,
        500,
    )
    assert (record.latency_ms, record.first_token_ms, record.status) == (1200, 300, "complete")
    for counter in counters(acme).values():
        assert (counter.tokens, counter.cost_micros, counter.reserved_tokens, counter.reserved_cost_micros) == (
            1500,
            450,
            0,
            0,
        )
        assert counter.cost == Decimal("0.000450")


def test_settling_twice_counts_the_usage_once(acme):
    held = reserve(acme.pk, 10, 100, NO_PRICE)
    settle(held.id, kind="openai", model="gpt-4o-mini", input_tokens=5, output_tokens=5, status="complete")
    assert (
        settle(held.id, kind="openai", model="gpt-4o-mini", input_tokens=5, output_tokens=5, status="complete") is None
    )
    assert counters(acme)["day"].tokens == 10
    assert UsageRecord.objects.count() == 1


def test_a_fallback_reply_reserves_at_the_dearest_price_and_settles_at_the_model_that_answered(acme, prices):
    chain = [
        Endpoint("openai", "chat_completions", "http://127.0.0.1:1/v1", "gpt-4.1"),
        Endpoint("openai", "chat_completions", "http://127.0.0.1:2/v1", "gpt-4o-mini"),
    ]
    assert highest_price(chain) == (Decimal("2.0000"), Decimal("8.0000"))
    set_quota(acme, daily_cost_cap=Decimal("0.01"))
    held = reserve(acme.pk, 200, 400, highest_price(chain))
    assert held.cost_micros == 200 * 2 + 400 * 8
    # The first endpoint failed before any text (billed nothing); the second answered.
    settle(
        held.id, kind="openai", model="gpt-4o-mini", input_tokens=150, output_tokens=300, status="complete", attempts=2
    )
    day = counters(acme)["day"]
    assert (day.cost_micros, day.reserved_cost_micros) == (203, 0)  # 202.5 micro-dollars, rounded half up
    record = UsageRecord.objects.get()
    assert (record.model, record.attempts, record.cost) == ("gpt-4o-mini", 2, Decimal("0.000203"))


def test_an_unknown_price_is_logged_and_counts_as_free(acme, prices, caplog):
    caplog.set_level(logging.WARNING)
    chain = [Endpoint("openai", "chat_completions", "http://127.0.0.1:1/v1", "gpt-unknown-9")]
    assert highest_price(chain) == NO_PRICE
    assert "no price for openai/gpt-unknown-9" in caplog.text


@MIDDAY
def test_an_expired_reservation_is_released_by_the_next_reservation(acme, caplog):
    set_quota(acme, daily_token_cap=1000)
    start = timezone.now()
    crashed = reserve(acme.pk, 100, 800, NO_PRICE, now=start)
    assert isinstance(reserve(acme.pk, 100, 800, NO_PRICE, now=start), Refusal)
    later = start + dt.timedelta(seconds=901)
    caplog.set_level(logging.WARNING)
    fresh = reserve(acme.pk, 100, 800, NO_PRICE, now=later)
    assert not isinstance(fresh, Refusal)
    assert services.release(crashed) is False, "its hold was given back already"
    assert counters(acme)["day"].reserved_tokens == 900
    assert "released 1 expired reservations" in caplog.text


@MIDDAY
def test_a_reservation_is_not_released_before_it_expires(acme):
    start = timezone.now()
    reserve(acme.pk, 10, 100, NO_PRICE, now=start)
    assert release_expired(acme.pk, start + dt.timedelta(seconds=899)) == 0
    assert counters(acme)["day"].reserved_tokens == 110
    assert release_expired(acme.pk, start + dt.timedelta(seconds=901)) == 1
    assert counters(acme)["day"].reserved_tokens == 0


@MIDDAY
def test_a_late_settlement_after_release_still_counts_what_was_billed(acme):
    start = timezone.now()
    held = reserve(acme.pk, 100, 800, NO_PRICE, now=start)
    release_expired(acme.pk, start + dt.timedelta(hours=1))
    settle(held.id, kind="openai", model="gpt-4o-mini", input_tokens=60, output_tokens=40, status="complete")
    day = counters(acme)["day"]
    assert (day.tokens, day.reserved_tokens) == (100, 0)


def test_a_settlement_rolled_back_with_its_transaction_is_written_when_retried(acme):
    # The consumer settles and stores the reply in one transaction, and retries it while the database is away.
    from django.db import transaction

    held = reserve(acme.pk, 100, 400, NO_PRICE)
    usage = {"kind": "openai", "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 300, "status": "complete"}
    with pytest.raises(RuntimeError), transaction.atomic():
        settle(held, **usage)
        raise RuntimeError("the reply could not be stored")
    assert settle(held, **usage) is not None
    assert settle(held, **usage) is None
    assert UsageRecord.objects.count() == 1
    day = counters(acme)["day"]
    assert (day.tokens, day.reserved_tokens) == (400, 0)


def test_the_prompt_bound_is_at_least_the_bytes_sent():
    turns = [ChatMessage("user", "héllo 😀"), ChatMessage("assistant", "hi")]
    bound = prompt_upper_bound("Be nice.", turns)
    assert bound >= len(b"Be nice.") + len("héllo 😀".encode()) + 2
    assert bound == 8 + 11 + 2 + services.MESSAGE_OVERHEAD_TOKENS * 4


def test_each_site_has_its_own_counters(acme, globex):
    set_quota(acme, daily_token_cap=200)
    assert not isinstance(reserve(acme.pk, 100, 100, NO_PRICE), Refusal)
    assert isinstance(reserve(acme.pk, 100, 100, NO_PRICE), Refusal)
    assert not isinstance(reserve(globex.pk, 100, 100, NO_PRICE), Refusal)


def test_release_gives_back_a_hold_once(acme):
    held = reserve(acme.pk, 100, 400, NO_PRICE)
    assert services.release(held.id) is True
    assert services.release(held.id) is False
    assert counters(acme)["day"].reserved_tokens == 0


@pytest.mark.django_db(transaction=True)
async def test_a_visitor_who_leaves_while_the_reservation_is_made_leaves_no_hold_behind(acme):
    import asyncio

    from channels.db import database_sync_to_async

    from backend.providers.base import ChatRequest

    request = ChatRequest(system="Be brief.", messages=[ChatMessage("user", "hi")], max_tokens=300)
    chain = [Endpoint("openai", "chat_completions", "http://127.0.0.1:1/v1", "gpt-4o-mini")]
    task = asyncio.ensure_future(services.reserve_reply_async(acme.pk, chain, request))
    await asyncio.sleep(0)  # the reservation is under way in the database thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(c.reserved_tokens == 0 for c in (await database_sync_to_async(counters)(acme)).values())
