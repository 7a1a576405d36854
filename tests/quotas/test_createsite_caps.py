"""createsite's cap and time-zone flags, and the errors they give (nothing is created on error)."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backend.providers.models import ProviderConfig
from backend.quotas.models import SiteQuota
from backend.sites.models import Site

pytestmark = pytest.mark.django_db


def createsite(*args: str) -> dict:
    out = io.StringIO()
    call_command("createsite", "Acme", "--origin", "https://acme.example", *args, stdout=out)
    return json.loads(out.getvalue())


def test_caps_and_time_zone_are_stored_with_the_site():
    output = createsite(
        "--daily-token-cap",
        "50000",
        "--monthly-token-cap",
        "1000000",
        "--daily-cost-cap",
        "2.50",
        "--monthly-cost-cap",
        "40",
        "--timezone",
        "Europe/Paris",
    )
    quota = SiteQuota.objects.get(site__key=output["key"])
    assert (quota.daily_token_cap, quota.monthly_token_cap) == (50_000, 1_000_000)
    assert (quota.daily_cost_cap, quota.monthly_cost_cap) == (Decimal("2.5"), Decimal("40"))
    assert quota.timezone == "Europe/Paris"


def test_without_flags_the_site_has_no_caps_and_utc():
    output = createsite()
    site = Site.objects.get(key=output["key"])
    from backend.quotas.services import get_quota

    quota = get_quota(site.pk)
    assert (quota.daily_token_cap, quota.monthly_token_cap, quota.daily_cost_cap, quota.monthly_cost_cap) == (
        None,
        None,
        None,
        None,
    )
    assert quota.timezone == "UTC" and quota.visitor_messages_per_minute == 10 and quota.ip_connections == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--daily-token-cap", "-5"], "--daily-token-cap cannot be negative"),
        (["--monthly-token-cap", "lots"], "--monthly-token-cap must be a whole number of tokens, got 'lots'"),
        (["--daily-token-cap", "1.5"], "--daily-token-cap must be a whole number"),
        (["--daily-cost-cap", "-0.01"], "--daily-cost-cap cannot be negative"),
        (["--monthly-cost-cap", "ten"], "--monthly-cost-cap must be an amount in USD such as 5 or 2.50, got 'ten'"),
        (["--monthly-cost-cap", "NaN"], "--monthly-cost-cap must be an amount in USD"),
        (["--daily-cost-cap", "0.0000001"], "more than 6 decimal places"),
        (["--timezone", "Mars/Olympus_Mons"], "'Mars/Olympus_Mons' is not a known time zone"),
        (["--timezone", "../../etc/passwd"], "is not a known time zone"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_created(args, message):
    with pytest.raises(CommandError, match=message.replace(".", r"\.").replace("(", r"\(")):
        createsite("--provider", "openai", "--api-key", "sk-live-abc", *args)
    assert not Site.objects.exists()
    assert not ProviderConfig.objects.exists()
    assert not SiteQuota.objects.exists()
