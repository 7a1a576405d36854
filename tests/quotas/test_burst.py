"""The invariant: a burst of messages never pushes a site's billed tokens or cost past its cap."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError
from django.db.models import F, Sum

from backend.chat.models import Message
from backend.quotas.models import UsageRecord
from backend.quotas.services import Refusal, reserve, settle
from backend.sites.models import Site
from tests.fakes.formats import openai_reply
from tests.fakes.server import Recorded, Reply
from tests.quotas.conftest import all_at_once, chat_from, hello, set_quota, totals

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
BURST = 50


def bills_everything_allowed(request: Recorded) -> Reply:
    """Answer slowly and bill the whole max_tokens, the worst a provider may do."""
    body = request.json()
    prompt = len(str(body["messages"])) // 4
    return openai_reply(["Thanks", " for", " asking", "!"], usage=(prompt, body["max_tokens"]), delay=0.1)


async def one_visitor(site_key: str, number: int) -> list[dict]:
    async with chat_from(site_key, ip=f"198.51.100.{number}") as ws:
        await hello(ws)
        await ws.send_json_to({"type": "message", "id": f"m{number}", "text": f"question {number}"})
        frames = [await ws.receive_json_from(timeout=30)]
        while frames[-1]["type"] not in ("end", "error"):
            frames.append(await ws.receive_json_from(timeout=30))
        return frames


async def burst(site: Site, fake) -> tuple[int, int]:
    fake.queue(*[bills_everything_allowed] * BURST)
    results = await asyncio.gather(*(one_visitor(site.key, n) for n in range(BURST)))
    answered = [r for r in results if r[-1]["type"] == "end"]
    refused = [r for r in results if r[-1]["type"] == "error"]
    assert len(answered) + len(refused) == BURST
    assert all(r[-1]["code"] == "quota_exceeded" and "leave your email" in r[-1]["message"].lower() for r in refused)
    assert all(r[-1]["status"] == "complete" for r in answered)
    # No provider call without a reservation: every call reached the fake and the ledger, nothing more.
    assert len(fake.requests) == len(answered) == await db(UsageRecord.objects.count)()
    # Every visitor's message is kept, answered or not.
    assert await db(Message.objects.filter(role="user").count)() == BURST
    return len(answered), len(refused)


def billed(site: Site) -> tuple[int, Decimal]:
    totals = UsageRecord.objects.filter(site=site).aggregate(
        tokens=Sum(F("input_tokens") + F("output_tokens")), cost=Sum("cost")
    )
    return totals["tokens"] or 0, totals["cost"] or Decimal(0)


async def test_fifty_messages_at_once_never_overshoot_the_daily_token_cap(acme, fake_openai):
    await db(Site.objects.filter(pk=acme.pk).update)(max_reply_tokens=100)
    await db(set_quota)(acme, daily_token_cap=1000)
    answered, refused = await burst(acme, fake_openai)
    assert 1 <= answered <= 6 and refused >= BURST - 6
    tokens, _ = await db(billed)(acme)
    assert 0 < tokens <= 1000
    for counter in (await db(totals)(acme)).values():
        assert counter.tokens == tokens and counter.reserved_tokens == 0
    assert all(r.json()["max_tokens"] <= 100 for r in fake_openai.requests)


async def test_fifty_messages_at_once_never_overshoot_the_monthly_cost_cap(acme, fake_openai):
    await db(Site.objects.filter(pk=acme.pk).update)(max_reply_tokens=100)
    await db(set_quota)(acme, monthly_cost_cap=Decimal("0.0003"))
    answered, refused = await burst(acme, fake_openai)
    assert 1 <= answered <= 6 and refused >= BURST - 6
    _, cost = await db(billed)(acme)
    assert isinstance(cost, Decimal) and Decimal(0) < cost <= Decimal("0.0003")
    month = (await db(totals)(acme))["month"]
    assert month.cost == cost and month.reserved_cost_micros == 0


def busy_retry(function, *args, **kwargs):
    """Wait and retry on lock contention, as SQLite's busy timeout does for a file database.

    The in-memory SQLite test database reports a locked table at once instead of waiting; PostgreSQL waits
    on its row locks and never gets here.
    """
    for _ in range(2000):
        try:
            return function(*args, **kwargs)
        except OperationalError as error:
            if "locked" not in str(error):
                raise
            time.sleep(0.005)
    raise AssertionError("the database stayed locked")


def test_fifty_threads_reserving_at_once_hold_no_more_than_the_cap(acme):
    set_quota(acme, daily_token_cap=1000, daily_cost_cap=Decimal("0.01"))
    price = (Decimal("2"), Decimal("8"))
    outcomes: list = []

    def reserve_and_bill() -> None:
        held = busy_retry(reserve, acme.pk, 50, 100, price)
        outcomes.append(held)
        if not isinstance(held, Refusal):
            output = held.max_reply_tokens  # the provider bills all it was allowed
            busy_retry(
                settle,
                held.id,
                kind="openai",
                model="gpt-4.1",
                input_tokens=50,
                output_tokens=output,
                status="complete",
            )

    all_at_once(BURST, reserve_and_bill)
    granted = [o for o in outcomes if not isinstance(o, Refusal)]
    day = totals(acme)["day"]
    # Each full call bills 150 tokens and 50×2 + 100×8 = 900 micro-dollars; the last ones may be lowered.
    assert 6 <= len(granted) <= 1000 // (50 + 32)
    assert day.tokens <= 1000 and day.cost_micros <= 10_000 and day.reserved_tokens == 0
    assert day.tokens == sum(g.tokens for g in granted)
    assert len(granted) == UsageRecord.objects.count()
