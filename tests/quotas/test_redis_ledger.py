"""The Redis ledger: no database query to reserve, one to settle, and the same invariant across processes.

Runs when REDIS_URL is set (the services run, `make test-services`); each test has its own key prefix.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings as django_settings
from django.core import mail
from django.db import connection
from django.db.models import F, Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.ops import health
from backend.quotas import ledger
from backend.quotas.models import UsageRecord
from backend.quotas.services import Refusal, get_quota, release_expired, reserve, settle, usage_summary
from tests.quotas.conftest import all_at_once, set_quota, totals

pytestmark = [
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL (run `make test-services`)"),
    pytest.mark.django_db,
]

FREE = (Decimal(0), Decimal(0))
GPT41 = (Decimal("2"), Decimal("8"))
THREADS = 40
# A reply's usage with its cost, as the consumer settles it (without the cost, settle reads the price table).
USAGE = {
    "kind": "openai",
    "model": "gpt-4.1",
    "input_tokens": 100,
    "output_tokens": 400,
    "status": "complete",
    "cost": Decimal("0.0034"),
}


# Expiry tests move 15 minutes or an hour on: from midday, so that no day ends in between.
MIDDAY = time_machine.travel(dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC), tick=False)


@pytest.fixture(autouse=True)
def redis_ledger(settings, own_quota_keys):
    settings.QUOTA_LEDGER = "redis"
    return ledger.current()


def bill(site, input_tokens: int, output_tokens: int, price=FREE, **kwargs):
    held = reserve(site.pk, input_tokens, output_tokens, price, **kwargs)
    assert not isinstance(held, Refusal), held
    return settle(
        held,
        kind="openai",
        model="gpt-4.1",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        status="complete",
    )


def billed(site) -> tuple[int, Decimal]:
    sums = UsageRecord.objects.filter(site=site).aggregate(
        tokens=Sum(F("input_tokens") + F("output_tokens")), cost=Sum("cost")
    )
    return sums["tokens"] or 0, sums["cost"] or Decimal(0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("caps", "limit"),
    [({"daily_token_cap": 1000}, "tokens"), ({"monthly_cost_cap": Decimal("0.005")}, "cost")],
)
def test_threads_reserving_at_once_never_bill_past_a_token_cap_or_a_cost_cap(acme, caps, limit):
    set_quota(acme, **caps)
    quota = get_quota(acme.pk)
    granted: list = []

    def reserve_and_bill() -> None:
        held = reserve(acme.pk, 50, 100, GPT41, quota=quota)
        if not isinstance(held, Refusal):
            granted.append(held)
            # The provider bills all it was allowed: the worst case for the cap.
            settle(
                held,
                kind="openai",
                model="gpt-4.1",
                input_tokens=50,
                output_tokens=held.max_reply_tokens,
                status="complete",
                cost=(50 * GPT41[0] + held.max_reply_tokens * GPT41[1]) / 1_000_000,
            )

    all_at_once(THREADS, reserve_and_bill)
    tokens, cost = billed(acme)
    # Each full reply bills 150 tokens and 900 micro-dollars: the caps allow 6 (tokens) or 5 (cost) of them.
    if limit == "tokens":
        assert 6 <= len(granted) <= 1000 // (50 + 32) and 0 < tokens <= 1000
    else:
        assert 5 <= len(granted) <= 6 and Decimal(0) < cost <= Decimal("0.005")
    assert len(granted) == UsageRecord.objects.count()
    day = totals(acme)["day"]
    assert (day.tokens, day.cost, day.reserved_tokens, day.reserved_cost_micros) == (tokens, cost, 0, 0)


def test_a_reservation_costs_no_query_and_a_settlement_exactly_one(acme):
    set_quota(acme, daily_token_cap=100_000, monthly_cost_cap=Decimal("10"))
    quota = get_quota(acme.pk)
    bill(acme, 10, 10, quota=quota)  # the first use seeds the period totals from the database
    with CaptureQueriesContext(connection) as reserving:
        held = reserve(acme.pk, 100, 500, GPT41, quota=quota)
    with CaptureQueriesContext(connection) as settling:
        settle(held, **USAGE)
    assert len(reserving) == 0, [q["sql"] for q in reserving]
    assert [q["sql"].split()[0] for q in settling] == ["INSERT"]
    # By id (the consumer's call today) the hold is read from Redis: still one query.
    held = reserve(acme.pk, 100, 500, GPT41, quota=quota)
    with CaptureQueriesContext(connection) as by_id:
        settle(held.id, **USAGE)
    assert len(by_id) == 1
    assert usage_summary(acme.pk)["day"]["tokens"] == 20 + 500 + 500


@MIDDAY
def test_an_expired_hold_is_given_back_by_the_next_reservation(acme, caplog):
    set_quota(acme, daily_token_cap=1000)
    start = timezone.now()
    reserve(acme.pk, 100, 800, FREE, now=start)  # its process crashes: never settled
    assert isinstance(reserve(acme.pk, 100, 800, FREE, now=start), Refusal)
    caplog.set_level(logging.WARNING)
    fresh = reserve(acme.pk, 100, 800, FREE, now=start + dt.timedelta(seconds=901))
    assert not isinstance(fresh, Refusal) and fresh.max_reply_tokens == 800
    assert totals(acme)["day"].reserved_tokens == 900
    assert "released 1 expired reservations" in caplog.text


@MIDDAY
def test_a_settlement_after_the_hold_expired_still_counts_what_was_billed(acme):
    set_quota(acme, daily_token_cap=1000)
    start = timezone.now()
    held = reserve(acme.pk, 100, 800, FREE, now=start)
    assert release_expired(acme.pk, start + dt.timedelta(hours=1)) == 1
    record = settle(held, kind="openai", model="gpt-4o-mini", input_tokens=60, output_tokens=40, status="complete")
    assert record is not None and record.tokens == 100
    day = totals(acme)["day"]
    assert (day.tokens, day.reserved_tokens) == (100, 0)
    assert reserve(acme.pk, 100, 900, FREE).max_reply_tokens == 800, "the 100 billed tokens count against the cap"


def test_when_redis_lost_its_keys_the_month_total_is_seeded_from_the_usage_ledger(acme, redis_ledger):
    set_quota(acme, monthly_token_cap=1000)
    with time_machine.travel(dt.datetime(2026, 6, 14, 12, tzinfo=dt.UTC), tick=False):
        bill(acme, 400, 500)  # 90% of the month, yesterday
    for key in redis_ledger.redis.scan_iter(f"{redis_ledger.prefix}*"):
        redis_ledger.redis.delete(key)
    with time_machine.travel(dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC), tick=False):
        held = reserve(acme.pk, 50, 500, FREE)
        summary = usage_summary(acme.pk)
    assert held.max_reply_tokens == 50  # what the month's cap leaves after 900 tokens and a 50-token prompt
    assert (summary["month"]["tokens"], summary["month"]["reserved_tokens"]) == (900, 100)
    assert (summary["day"]["tokens"], summary["day"]["reserved_tokens"]) == (0, 100)


def test_at_80_percent_of_a_cap_the_warning_is_logged_and_mailed_once(acme, settings, caplog):
    settings.EMAIL_HOST = "smtp.example.net"
    settings.ADMINS = [("Ops", "ops@example.net")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    set_quota(acme, daily_token_cap=1000)
    caplog.set_level(logging.WARNING)
    bill(acme, 500, 200)  # 70%
    assert mail.outbox == [] and "near cap" not in caplog.text
    bill(acme, 50, 50)  # 80%
    bill(acme, 50, 50)  # 90%
    assert caplog.text.count("usage near cap") == 1
    assert len(mail.outbox) == 1 and "daily token cap: 80% used" in mail.outbox[0].body


def test_a_redis_outage_is_an_error_the_consumer_reports_as_unavailable(acme, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    with pytest.raises(health.UNAVAILABLE_ERRORS):
        reserve(acme.pk, 10, 100, FREE, quota=get_quota(acme.pk))
