"""Caps reset with calendar days and months in the site's time zone, not the server's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from backend.quotas.models import UsageRecord
from backend.quotas.services import Refusal, reserve, settle, usage_summary
from tests.quotas.conftest import set_quota

pytestmark = pytest.mark.django_db

FREE = (Decimal(0), Decimal(0))


def use_up(site, tokens: int) -> bool:
    """Bill tokens to the site when its caps allow it; return whether they did."""
    held = reserve(site.pk, tokens - 50, 50, FREE)
    if isinstance(held, Refusal):
        return False
    settle(held, kind="openai", model="gpt-4o-mini", input_tokens=tokens - 50, output_tokens=50, status="complete")
    return True


def test_the_daily_cap_resets_at_midnight_in_the_sites_time_zone(acme):
    set_quota(acme, daily_token_cap=1000, timezone="Asia/Tokyo")
    # 23:50 in Tokyo on 9 March is 14:50 UTC.
    with time_machine.travel(dt.datetime(2026, 3, 9, 14, 50, tzinfo=dt.UTC), tick=False) as clock:
        assert use_up(acme, 1000)
        assert isinstance(reserve(acme.pk, 10, 50, FREE), Refusal)
        clock.shift(dt.timedelta(minutes=9))  # 23:59 Tokyo
        assert isinstance(reserve(acme.pk, 10, 50, FREE), Refusal)
        clock.shift(dt.timedelta(minutes=2))  # 00:01 on the 10th in Tokyo, still the 9th in UTC
        assert timezone.now().date() == dt.date(2026, 3, 9)
        assert use_up(acme, 300)
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
        assert use_up(acme, 2000)
        assert usage_summary(acme.pk)["month"]["start"] == dt.date(2026, 1, 1)
        assert isinstance(reserve(acme.pk, 10, 50, FREE), Refusal)
        clock.shift(dt.timedelta(minutes=31))  # 00:01 on 1 February in Los Angeles
        assert use_up(acme, 500)
        summary = usage_summary(acme.pk)
    assert (summary["month"]["start"], summary["month"]["tokens"]) == (dt.date(2026, 2, 1), 500)
    assert (summary["day"]["start"], summary["day"]["tokens"]) == (dt.date(2026, 2, 1), 500)
    january = usage_summary(acme.pk, now=dt.datetime(2026, 2, 1, 7, 30, tzinfo=dt.UTC))["month"]
    assert (january["start"], january["tokens"]) == (dt.date(2026, 1, 1), 2000)


def test_a_reply_that_spans_midnight_settles_into_the_day_it_reserved_from(acme):
    set_quota(acme, daily_token_cap=1000)
    with time_machine.travel(dt.datetime(2026, 4, 30, 23, 59, 50, tzinfo=dt.UTC), tick=False) as clock:
        held = reserve(acme.pk, 100, 400, FREE)
        clock.shift(20)  # the reply ends on 1 May
        settle(held.id, kind="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=300, status="complete")
        summary = usage_summary(acme.pk)
    assert summary["day"]["tokens"] == 0 and summary["month"]["tokens"] == 0
    april = usage_summary(acme.pk, now=dt.datetime(2026, 4, 30, 23, 59, 50, tzinfo=dt.UTC))["day"]
    assert (april["start"], april["tokens"], april["reserved_tokens"]) == (dt.date(2026, 4, 30), 400, 0)
