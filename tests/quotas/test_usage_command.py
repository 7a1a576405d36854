"""`manage.py usage SITE_KEY [--json]`: what an owner reads, and the errors they see."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from backend.quotas.services import reserve, settle
from tests.quotas.conftest import set_quota

pytestmark = pytest.mark.django_db

MINI = (Decimal("0.15"), Decimal("0.60"))


def usage(*args: str) -> str:
    out = io.StringIO()
    call_command("usage", *args, stdout=out)
    return out.getvalue()


def bill(site, input_tokens: int, output_tokens: int) -> None:
    held = reserve(site.pk, input_tokens, output_tokens, MINI)
    settle(
        held.id,
        kind="openai",
        model="gpt-4o-mini",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        status="complete",
    )


def test_json_output_is_one_object_with_day_and_month(acme):
    set_quota(acme, daily_token_cap=10_000, monthly_cost_cap=Decimal("2.5"))
    with time_machine.travel(dt.datetime(2026, 5, 20, 12, tzinfo=dt.UTC), tick=False):
        bill(acme, 1000, 500)  # 0.000450 USD
        with time_machine.travel(dt.datetime(2026, 5, 19, 12, tzinfo=dt.UTC), tick=False):
            bill(acme, 2000, 0)  # yesterday: counts in the month only, 0.000300 USD
        output = json.loads(usage("--json", "--", acme.key))
    assert output == {
        "day": {"tokens": 1500, "cost": "0.000450", "token_cap": 10000, "cost_cap": None},
        "month": {"tokens": 3500, "cost": "0.000750", "token_cap": None, "cost_cap": "2.500000"},
    }


def test_a_site_without_usage_or_caps_prints_zeros_and_nulls(acme):
    output = json.loads(usage("--json", "--", acme.key))
    assert output["day"] == {"tokens": 0, "cost": "0.000000", "token_cap": None, "cost_cap": None}
    assert output["month"] == output["day"]


def test_text_output_shows_usage_caps_and_what_remains(acme):
    set_quota(acme, daily_token_cap=10_000, daily_cost_cap=Decimal("1"), timezone="Europe/Paris")
    with time_machine.travel(dt.datetime(2026, 5, 20, 23, 30, tzinfo=dt.UTC), tick=False):
        bill(acme, 1000, 500)
        text = usage("--", acme.key)
    lines = text.splitlines()
    assert lines[0] == f"Acme ({acme.key}), time zone Europe/Paris"
    # 23:30 UTC is already the 21st in Paris.
    assert lines[1] == "Today (from 2026-05-21):"
    assert lines[2] == "  tokens 1,500 of 10,000, 8,500 remaining"
    assert lines[3] == "  cost 0.000450 USD of 1.000000 USD, 0.999550 USD remaining"
    assert lines[4] == "This month (from 2026-05-01):"
    assert lines[5] == "  tokens 1,500 of no cap"
    assert lines[6] == "  cost 0.000450 USD of no cap"


def test_text_output_shows_what_replies_in_progress_hold(acme):
    reserve(acme.pk, 100, 200, MINI)
    text = usage("--", acme.key)
    assert "held for replies in progress: 300 tokens, 0.000135 USD" in text


def test_an_unknown_site_is_a_clear_error():
    with pytest.raises(CommandError, match="No site has the key 'nope'"):
        usage("nope")


def test_an_unknown_site_exits_non_zero_from_the_command_line(acme, capsys):
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", "usage", "no-such-site", "--json"]).execute()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "No site has the key 'no-such-site'" in captured.err
    assert captured.out == ""


def test_a_key_that_starts_with_a_dash_is_read_after_a_double_dash(acme):
    from backend.sites.models import Site

    Site.objects.filter(pk=acme.pk).update(key="-dash-first-key")
    assert json.loads(usage("--json", "--", "-dash-first-key"))["day"]["tokens"] == 0
