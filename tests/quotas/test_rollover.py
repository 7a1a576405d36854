"""Caps reset with calendar days and months in the site's time zone, not the server's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from backend.quotas.models import Reservation, UsageCounter, UsageRecord
from backend.quotas.services import Refusal, reserve, settle, usage_summary
from tests.quotas.conftest import set_quota

pytestmark = pytest.mark.django_db

FREE = (Decimal(0), Decimal(0))


def use_up(site, tokens: int) -> Reservation | Refusal:
    held = reserve(site.pk, tokens - 50, 50, FREE)
    if isinstance(held, Reservation):
        settle(
            held.id, kind="openai", model="gpt-4o-mini", input_tokens=tokens - 50, output_tokens=50, status="complete"
        )
    return held


def test_the_daily_cap_resets_at_midnight_in_the_sites_time_zone(acme):
    set_quota(acme, daily_token_cap=1000, timezone="Asia/Tokyo")
    # 23:50 in Tokyo on 9 March is 14:50 UTC.
    with time_machine.travel(dt.datetime(2026, 3, 9, 14, 50, tzinfo=dt.UTC), tick=False) as clock:
        assert isinstance(use_up(acme, 1000), Reservation)
        assert isinstance(reserve(acme.pk, 10, 50, FREE), Refusal)
        clock.shift(dt.timedelta(minutes=9))  # 23:59 Tokyo
        assert isinstance(reserve(acme.pk, 10, 50, FREE), Refusal)
        clock.shift(dt.timedelta(minutes=2))  # 00:01 on the 10th in Tokyo, still the 9th in UTC
        assert timezone.now().date() == dt.date(2026, 3, 9)
        assert isinstance(use_up(acme, 300), Reservation)
        summary = usage_summary(acme.pk)
    assert summary["day"]["start"] == dt.date(2026, 3, 10) and summary["day"]["tokens"] == 300
    assert summary["month"]["tokens"] == 1300
    assert list(UsageRecord.objects.order_by("created").values_list("day", flat=True)) == [
        dt.date(2026, 3, 9),
        dt.date(2026, 3, 10),
    ]


def test_the_monthly_cap_resets_on_the_first_in_the_sites_time_zone(acme):
    set_quota(acme, monthly_token_cap=2000, timezone="America/Los_Angeles")
    # 31 January, 23:30 in Los Angeles is 07:30 UTC on 1 February.
    with time_machine.travel(dt.datetime(2026, 2, 1, 7, 30, tzinfo=dt.UTC), tick=False) as clock:
        assert isinstance(use_up(acme, 2000), Reservation)
        assert usage_summary(acme.pk)["month"]["start"] == dt.date(2026, 1, 1)
        assert isinstance(reserve(acme.pk, 10, 50, FREE), Refusal)
        clock.shift(dt.timedelta(minutes=31))  # 00:01 on 1 February in Los Angeles
        assert isinstance(use_up(acme, 500), Reservation)
        summary = usage_summary(acme.pk)
    assert (summary["month"]["start"], summary["month"]["tokens"]) == (dt.date(2026, 2, 1), 500)
    assert (summary["day"]["start"], summary["day"]["tokens"]) == (dt.date(2026, 2, 1), 500)
    months = UsageCounter.objects.filter(site=acme, period="month").order_by("start")
    assert [(c.start, c.tokens) for c in months] == [(dt.date(2026, 1, 1), 2000), (dt.date(2026, 2, 1), 500)]


def test_a_reply_that_spans_midnight_settles_into_the_day_it_reserved_from(acme):
    set_quota(acme, daily_token_cap=1000)
    with time_machine.travel(dt.datetime(2026, 4, 30, 23, 59, 50, tzinfo=dt.UTC), tick=False) as clock:
        held = reserve(acme.pk, 100, 400, FREE)
        clock.shift(20)  # the reply ends on 1 May
        settle(held.id, kind="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=300, status="complete")
        summary = usage_summary(acme.pk)
    assert summary["day"]["tokens"] == 0 and summary["month"]["tokens"] == 0
    april = UsageCounter.objects.get(site=acme, period="day", start=dt.date(2026, 4, 30))
    assert (april.tokens, april.reserved_tokens) == (400, 0)
